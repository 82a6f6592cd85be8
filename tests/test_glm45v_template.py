"""GLM-4.5V / 4.6V's chat format on the MoE vision demo (issue 29): its template is GLM-4.5's public one with image
and video parts in the user turns, so an image row with reasoning and tool calls trains as that template renders it,
images widened by the processor's rule; an earlier answer whose reasoning the template drops trains its answer only;
and the chat's prompt carries the tools block and the images."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from core.data.formats import Conversation, convert_row
from core.data.multimodal import IGNORE_INDEX, VisionEncoder
from core.models.demo import DEMOS, VISION_MOE_DEMO_NAME, build_demo_model, build_tokenizer
from core.models.vision import load_image_processor
from core.resources import asset
from tests.test_glm45_template import CASES, REAL, real_messages
from tests.test_vision_data import BLUE, RED, png, reference_text

TEMPLATE = asset("templates", "glm45v.jinja").read_text(encoding="utf-8")
MEDIA_LINES = (  # the only lines GLM-4.5V's template adds to GLM-4.5's
    "            {%- elif item is mapping and (item.type == 'image' or 'image' in item) -%}\n",
    "                <|begin_of_image|><|image|><|end_of_image|>\n",
    "            {%- elif item is mapping and (item.type == 'video' or 'video' in item) -%}\n",
    "                <|begin_of_video|><|video|><|end_of_video|>\n",
)
PAINT = {
    "type": "function",
    "function": {
        "name": "paint",
        "description": "Paint the wall",
        "parameters": {"type": "object", "properties": {"colour": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> VisionEncoder:
    from transformers import AutoTokenizer

    folder = build_demo_model(tmp_path_factory.mktemp("models") / "demo-vision-moe", name=VISION_MOE_DEMO_NAME)
    return VisionEncoder(AutoTokenizer.from_pretrained(folder), load_image_processor(folder))


def test_the_template_is_glm45s_with_images_and_videos_in_user_turns(encoder):
    lines = TEMPLATE.splitlines(keepends=True)
    assert all(line in lines for line in MEDIA_LINES)
    assert "".join(line for line in lines if line not in MEDIA_LINES) == REAL["GLM-4.5"]
    assert encoder.tokenizer.chat_template == TEMPLATE  # the demo saves it as its own
    special = set(encoder.tokenizer.all_special_tokens)
    assert {"<|begin_of_image|>", "<|image|>", "<|begin_of_box|>"} <= special and "<think>" not in special


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_text_rows_render_as_glm45_renders_them(case, thinking):
    tokenizer = build_tokenizer(DEMOS[VISION_MOE_DEMO_NAME])
    row = CASES[case]
    kwargs = {} if thinking else {"enable_thinking": False}
    messages = real_messages(row, thinking)

    def render(source: str) -> str:
        return tokenizer.apply_chat_template(
            messages, tools=row.get("tools"), chat_template=source, tokenize=False, **kwargs
        )

    assert render(TEMPLATE) == render(REAL["GLM-4.5"])


def image_tool_row(folder: Path) -> Conversation:
    """Two image turns: the first answered with reasoning (dropped by the template once the second question comes),
    the second with reasoning and a tool call, its result, and a last answer."""
    (folder / "red.png").write_bytes(png(RED))
    (folder / "blue.png").write_bytes(png(BLUE, (120, 50)))
    row = {
        "tools": [PAINT],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "red.png"}},
                    {"type": "text", "text": "Colour?"},
                ],
            },
            {"role": "assistant", "content": "Red.", "reasoning_content": "All pixels are red."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Paint the wall like "},
                    {"type": "image_url", "image_url": {"url": "blue.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "The image is blue.",
                "tool_calls": [{"type": "function", "function": {"name": "paint", "arguments": '{"colour": "blue"}'}}],
            },
            {"role": "tool", "content": "painted"},
            {"role": "assistant", "content": "Done: the wall is blue."},
        ],
    }
    return convert_row(row, "openai")


def test_an_image_row_with_reasoning_and_a_tool_call_trains_as_the_template_renders_it(encoder, tmp_path):
    conversation = image_tool_row(tmp_path)
    sample = encoder.encode(conversation, tmp_path)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Red.", "reasoning_content": "All pixels are red."},
        {"role": "user", "content": [{"type": "text", "text": "Paint the wall like "}, {"type": "image"}]},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "The image is blue.",
            "tool_calls": [{"type": "function", "function": {"name": "paint", "arguments": {"colour": "blue"}}}],
        },
        {"role": "tool", "content": "painted"},
        {"role": "assistant", "content": "Done: the wall is blue."},
    ]
    rendered = encoder.tokenizer.apply_chat_template(messages, tools=[PAINT], tokenize=False)
    expected = reference_text(encoder, messages, sample["image_grid_thw"], tools=[PAINT]) + "<|endoftext|>"
    tokenizer = encoder.tokenizer
    assert tokenizer.decode(sample["input_ids"]) == expected
    assert sample["input_ids"] == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert "# Tools" in rendered and "All pixels are red." not in rendered  # as the real template drops it
    learned = tokenizer.decode([t for t, label in zip(sample["input_ids"], sample["labels"]) if label != IGNORE_INDEX])
    ignored = tokenizer.decode([t for t, label in zip(sample["input_ids"], sample["labels"]) if label == IGNORE_INDEX])
    for written in ("Red.<|user|>", "The image is blue.", "<tool_call>paint", "<arg_value>blue</arg_value>", "Done"):
        assert written in learned, written
    assert "<|observation|>" in learned and "<|image|>" not in learned
    for read in ("Colour?", "painted", "Paint the wall like", "# Tools"):
        assert read in ignored and read not in learned, read
    # The earlier answer's empty think stands where the model writes its own thought: it is not learned (the last
    # answer's, written for an answer without a thought, is: as GLM-4.5's text rows train).
    assert "<think></think>\nRed." in tokenizer.decode(sample["input_ids"]) and "<think></think>\nRed." not in learned
    assert learned.endswith("<think></think>\nDone: the wall is blue.<|endoftext|>")


def test_thinking_off_asks_with_nothink_and_trains_no_thought(encoder, tmp_path):
    off = VisionEncoder(encoder.tokenizer, encoder.image_processor, {"enable_thinking": False})
    conversation = Conversation(
        [{"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "Red."}], images=["red.png"]
    )
    (tmp_path / "red.png").write_bytes(png(RED))
    sample = off.encode(conversation, tmp_path)
    text = encoder.tokenizer.decode(sample["input_ids"])
    learned = encoder.tokenizer.decode([t for t, lab in zip(sample["input_ids"], sample["labels"]) if lab != -100])
    assert "Colour?/nothink<|assistant|>\n<think></think>" in text and learned == "\nRed.<|endoftext|>"
    prompt = off.encode_prompt(Conversation(conversation.messages[:1], images=["red.png"]), tmp_path)
    assert encoder.tokenizer.decode(prompt["input_ids"][0]).endswith("/nothink<|assistant|>\n<think></think>")


def test_the_chat_prompt_carries_the_tools_and_the_image(encoder, tmp_path):
    (tmp_path / "red.png").write_bytes(png(RED))
    conversation = Conversation([{"role": "user", "content": "<image>Paint it."}], tools=[PAINT], images=["red.png"])
    inputs = encoder.encode_prompt(conversation, tmp_path)
    text = encoder.tokenizer.decode(inputs["input_ids"][0])
    assert text.startswith("[gMASK]<sop><|system|>\n# Tools") and json.dumps(PAINT, ensure_ascii=False) in text
    assert text.endswith("<|begin_of_image|>" + "<|image|>" * 9 + "<|end_of_image|>Paint it.<|assistant|>")
    assert int(inputs["mm_token_type_ids"].sum()) == 9 and inputs["pixel_values"].shape[0] == 36


def paint_rows(folder: Path) -> Path:
    """The colours demo's 48 images as GLM-4.5V agent rows: think about the image, then call paint with its colour."""
    source = asset("datasets", "colours.json")
    rows = []
    for row in json.loads(source.read_text(encoding="utf-8")):
        image = str(source.parent / row["images"][0])
        name = Path(image).stem.split("_")[0]
        content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Paint the wall."}]
        call = {"type": "function", "function": {"name": "paint", "arguments": json.dumps({"colour": name})}}
        thought = f"The image is {name}."
        rows.append(
            {
                "tools": [PAINT],
                "messages": [
                    {"role": "user", "content": content},
                    {"role": "assistant", "content": "", "reasoning_content": thought, "tool_calls": [call]},
                ],
            }
        )
    path = folder / "paint.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_the_moe_vision_model_learns_to_call_a_tool_about_an_image_and_the_api_returns_the_call(tmp_path):
    """Trained on image rows with reasoning and a tool call, the tuned GLM-4.5V-shaped model answers the official
    `openai` client with a tool call (its arguments read from an image it never saw) and its reasoning as a field."""
    from openai import OpenAI

    from core.api import ApiServer, create_api
    from core.chat.engine import ChatEngine
    from core.config import RunConfig
    from core.training.runner import TrainingSession
    from tests.test_vision_training import held_out_images
    from tests.ui_server import free_port

    config = RunConfig(
        model_name_or_path=VISION_MOE_DEMO_NAME,
        dataset=str(paint_rows(tmp_path)),
        finetuning_type="full",
        num_train_epochs=3,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
    )
    status = TrainingSession(config, tmp_path / "run").run()
    assert status["state"] == "finished" and status["train_samples"] == 48, status.get("error")
    engine = ChatEngine()
    engine.load_model(str(tmp_path / "run" / "model"))
    server = ApiServer(create_api(engine, "painter", lambda: {}), port=free_port()).start()
    try:
        client = OpenAI(base_url=server.url, api_key="unused")
        right = 0
        images = held_out_images(tmp_path / "unseen", count=12)
        for path, name, _ in images:
            uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
            content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "Paint the wall."}]
            answer = client.chat.completions.create(
                model="painter", messages=[{"role": "user", "content": content}], tools=[PAINT], temperature=0
            )
            choice = answer.choices[0]
            calls = choice.message.tool_calls or []
            thought = (choice.message.model_extra or {}).get("reasoning_content") or ""
            right += (
                choice.finish_reason == "tool_calls"
                and [(call.function.name, json.loads(call.function.arguments)) for call in calls]
                == [("paint", {"colour": name})]
                and f"The image is {name}." in thought
            )
        assert right >= 10  # of 12: the call, its argument and the thought before it
    finally:
        server.stop()

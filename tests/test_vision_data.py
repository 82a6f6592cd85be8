"""Issue 29's first layer: the tiny GLM-V demo models, image rows in both data styles with their row problems, and
an image row encoded as the model's own template and processor say (one forward pass of the model on it)."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.data import prepare
from core.data.dataset import load_conversations
from core.data.formats import Conversation
from core.data.multimodal import IGNORE_INDEX, VisionEncoder, collate
from core.models.demo import VISION_DEMO_NAME, VISION_MOE_DEMO_NAME, build_demo_model
from core.models.loader import locate_model
from core.models.vision import load_image_processor
from core.resources import asset

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (60, 60)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(colour: tuple[int, int, int]) -> str:
    return "data:image/png;base64," + base64.b64encode(png(colour)).decode()


@pytest.fixture(scope="module")
def vision_demo(tmp_path_factory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("models") / "demo-vision", name=VISION_DEMO_NAME)


@pytest.fixture(scope="module")
def encoder(vision_demo) -> VisionEncoder:
    from transformers import AutoTokenizer

    return VisionEncoder(AutoTokenizer.from_pretrained(vision_demo), load_image_processor(vision_demo))


def test_vision_demo_has_the_real_checkpoint_shape(vision_demo):
    config = json.loads((vision_demo / "config.json").read_text())
    assert config["model_type"] == "glm4v" and config["architectures"] == ["Glm4vForConditionalGeneration"]
    tokens = json.loads((vision_demo / "tokenizer.json").read_text())["added_tokens"]
    ids = {token["content"]: token["id"] for token in tokens if token["special"]}
    assert config["image_token_id"] == ids["<|image|>"]
    assert config["image_start_token_id"] == ids["<|begin_of_image|>"]
    assert config["image_end_token_id"] == ids["<|end_of_image|>"]
    # the real GLM-4.1V template and image processor settings, loadable without torchvision
    template = (vision_demo / "chat_template.jinja").read_text(encoding="utf-8")
    assert template == asset("templates", "glm4v.jinja").read_text(encoding="utf-8")
    processor = load_image_processor(vision_demo)
    assert (processor.patch_size, processor.merge_size, processor.temporal_patch_size) == (14, 2, 2)
    # the loader tells the vision models apart: a folder by config.json, a demo by its recipe before it is built
    assert locate_model(str(vision_demo)).vision_type == "glm4v"
    assert locate_model(VISION_MOE_DEMO_NAME).vision_type == "glm4v_moe"
    assert locate_model("demo").vision_type == ""


def write_rows(folder: Path, name: str, rows: list[dict]) -> Path:
    path = folder / name
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return path


def test_image_rows_in_both_styles_and_their_row_problems(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "red.png").write_bytes(png(RED))
    (tmp_path / "img" / "blue.png").write_bytes(png(BLUE))
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "big.png").write_bytes(png(GREEN, (200, 200)))
    absolute = str(tmp_path / "img" / "blue.png")
    factory = [  # LLaMA-Factory's style: <image> placeholders, an images list relative to the data file
        {"instruction": "<image><image>Which colours?", "output": "red, blue", "images": ["img/red.png", absolute]},
        {"instruction": "<image>Colour?", "output": "red", "images": ["img/missing.png"]},
        {"instruction": "<image>Colour?", "output": "red", "images": ["img/broken.png"]},
        {"instruction": "<image>Colour?", "output": "red", "images": ["img/red.png", "img/blue.png"]},
        {"instruction": "<image>Colour?", "output": "red", "images": ["https://example.com/red.png"]},
        {"instruction": "<image>Colour?", "output": "green", "images": ["big.png"]},
        {"instruction": "No image here", "output": "fine"},
    ]
    monkeypatch.setattr("PIL.Image.MAX_IMAGE_PIXELS", 100 * 100)  # big.png (200 x 200) is a bomb to PIL now
    factory_file = write_rows(tmp_path, "factory.jsonl", factory)
    loaded = load_conversations(str(factory_file))
    assert [len(c.images or ()) for c in loaded.result.conversations] == [2, 0]
    assert loaded.result.conversations[0].images == ["img/red.png", absolute]
    found = {problem.row: problem.problem.code for problem in loaded.result.problems}
    assert found == {
        2: "row.image_missing",
        3: "row.image_unreadable",
        4: "row.image_count_mismatch",
        5: "row.image_remote",
        6: "row.image_too_large",
    }
    shown = {problem.row: str(problem) for problem in loaded.result.problems}
    assert "missing.png" in shown[2] and "row 2" in shown[2].lower()
    assert "1 <image> placeholder(s)" in shown[4] and "2 image(s)" in shown[4]
    assert "never downloaded" in shown[5]
    checked = prepare.check(str(factory_file))  # the Data tab's cached path reports the same rows
    assert {p.row: p.problem.code for p in checked.problems()} == found and checked.usable_count == 2

    openai = [  # OpenAI messages: image_url parts (a path or a data: URI) beside text parts, several per row
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "First "},
                        {"type": "image_url", "image_url": {"url": "img/red.png"}},
                        {"type": "text", "text": " then "},
                        {"type": "image_url", "image_url": {"url": data_uri(GREEN)}},
                    ],
                },
                {"role": "assistant", "content": "red, green"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]},
                {"role": "assistant", "content": "?"},
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                },
                {"role": "assistant", "content": "?"},
            ]
        },
    ]
    loaded = load_conversations(str(write_rows(tmp_path, "openai.jsonl", openai)))
    (first,) = loaded.result.conversations
    assert first.messages[0]["content"] == "First <image> then <image>"
    assert first.images[0] == "img/red.png" and first.images[1].startswith("data:image/png;base64,")
    assert {p.row: p.problem.code for p in loaded.result.problems} == {2: "row.image_remote", 3: "row.image_unreadable"}


def reference_text(encoder: VisionEncoder, messages: list[dict], grids, tools: list[dict] | None = None) -> str:
    """What the checkpoint's processor feeds the model: its template's text, each `<|image|>` widened by
    transformers' own Glm4vProcessor rule (its class cannot be built here: its video half needs torchvision)."""
    from transformers import Glm4vProcessor

    rendered = encoder.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    processor = SimpleNamespace(image_processor=encoder.image_processor, image_token="<|image|>")
    pieces = rendered.split("<|image|>")
    text = pieces[0]
    for index, piece in enumerate(pieces[1:]):
        text += Glm4vProcessor.replace_image_token(processor, {"image_grid_thw": grids}, index) + piece
    return text


def two_image_conversation(tmp_path: Path) -> Conversation:
    (tmp_path / "red.png").write_bytes(png(RED, (60, 60)))
    (tmp_path / "wide.png").write_bytes(png(BLUE, (120, 50)))
    return Conversation(
        [
            {"role": "user", "content": "<image>What colour is this?"},
            {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "And <image> this one?"},
            {"role": "assistant", "content": "Blue."},
        ],
        system="Name colours.",
        images=["red.png", "wide.png"],
    )


def test_encoded_row_is_the_templates_text_with_the_processors_image_tokens(encoder, tmp_path):
    conversation = two_image_conversation(tmp_path)
    sample = encoder.encode(conversation, tmp_path)
    grids = sample["image_grid_thw"]
    counts = [int(grid.prod()) // 4 for grid in grids]
    assert counts == [9, 8]  # smart resize: 60x60 -> 84x84 (the minimum pixels), 120x50 -> 112x56 (28-multiples)
    messages = [  # the same row written as a user of the checkpoint would pass it to apply_chat_template
        {"role": "system", "content": "Name colours."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is this?"}]},
        {"role": "assistant", "content": "Red."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "And "}, {"type": "image"}, {"type": "text", "text": " this one?"}],
        },
        {"role": "assistant", "content": "Blue."},
    ]
    expected = reference_text(encoder, messages, grids) + "<|endoftext|>"
    tokenizer = encoder.tokenizer
    assert tokenizer.decode(sample["input_ids"]) == expected
    assert sample["input_ids"] == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert expected.startswith("[gMASK]<sop><|system|>\nName colours.<|user|>\n<|begin_of_image|><|image|>")
    # mm_token_type_ids: 1 exactly on the image tokens, as the processor marks them
    image_id = tokenizer.convert_tokens_to_ids("<|image|>")
    assert sum(sample["mm_token_type_ids"]) == sum(counts) == sample["input_ids"].count(image_id)
    # loss on the answers and the stop token after each, nothing else (no image token, no question)
    learned = [token if label != IGNORE_INDEX else None for token, label in zip(sample["input_ids"], sample["labels"])]
    runs, current = [], []
    for token in learned + [None]:
        if token is None and current:
            runs.append(tokenizer.decode(current))
            current = []
        elif token is not None:
            current.append(token)
    assert runs == ["Red.<|user|>", "Blue.<|endoftext|>"]


def test_one_forward_pass_of_each_tiny_glm_v_on_an_encoded_batch(vision_demo, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    text_only = Conversation([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}])
    moe = build_demo_model(tmp_path / "demo-vision-moe", name=VISION_MOE_DEMO_NAME)
    for folder in (vision_demo, moe):  # each with its own tokenizer and template (GLM-4.1V's, GLM-4.5V's)
        encoder = VisionEncoder(AutoTokenizer.from_pretrained(folder), load_image_processor(folder))
        samples = [encoder.encode(two_image_conversation(tmp_path), tmp_path), encoder.encode(text_only)]
        batch = collate(samples, encoder.tokenizer.pad_token_id)
        assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
        with torch.no_grad():
            loss = model(**batch).loss
        assert math.isfinite(loss.item()) and loss.item() > 0, folder.name


def test_what_the_models_own_template_would_drop_is_a_row_problem(encoder):
    """GLM-4.1V's template renders neither reasoning_content nor tools: such a row is refused by number (it would
    train without them); thinking written in the answer, as the model writes it, trains as text."""
    from core.data.formats import RowError

    asked = {"role": "user", "content": "hi"}
    with pytest.raises(RowError, match="reasoning_content"):
        encoder.encode(Conversation([asked, {"role": "assistant", "content": "x", "reasoning": "thought"}]))
    with pytest.raises(RowError, match="tool"):
        encoder.encode(Conversation([asked, {"role": "assistant", "content": "x"}], tools=[{"type": "function"}]))
    sample = encoder.encode(
        Conversation([asked, {"role": "assistant", "content": "<think>r</think><answer>x</answer>"}])
    )
    trained = [t for t, label in zip(sample["input_ids"], sample["labels"]) if label != IGNORE_INDEX]
    assert encoder.tokenizer.decode(trained) == "<think>r</think><answer>x</answer><|endoftext|>"

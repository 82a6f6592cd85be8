"""Issue 29: the tiny GLM-V models train on image rows (full, freeze, LoRA; the MoE one too), and the result answers
about images it never saw, through the chat engine and through the official `openai` client with a data: URI.

The demo dataset `colours` asks for the colour of 48 solid images; the held-out images are drawn with other seeds
(other shades and sizes, scripts/make_colour_images.py), 40 of them, half asked in Chinese and half in English.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import safe_open

from core.chat.engine import ChatEngine, GenerationSettings
from core.config import RunConfig
from core.errors import ConfigError
from core.models.loader import prepare_model
from core.training.lifecycle import check_inputs
from core.training.runner import TrainingSession
from scripts.make_colour_images import COLOURS, colour_image

GREEDY = GenerationSettings(greedy=True, max_new_tokens=8)
QUESTION = {"zh": "这张图片是什么颜色？", "en": "What colour is this image?"}


def held_out_images(folder: Path, count: int = 40, seed: int = 2026) -> list[tuple[Path, str, str]]:
    """(image file, colour, language) for `count` images the demo run never saw."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    made = []
    for number in range(count):
        name = list(COLOURS)[number % len(COLOURS)]
        path = folder / f"{number}.png"
        colour_image(name, rng).save(path)
        made.append((path, name, "zh" if number % 2 == 0 else "en"))
    return made


def expected(name: str, language: str) -> str:
    _, chinese, english = COLOURS[name]
    return (chinese if language == "zh" else english).rstrip("。.")


def train(tmp_path: Path, **settings) -> tuple[Path, dict]:
    config = RunConfig(
        model_name_or_path=settings.pop("model_name_or_path", "demo-vision"),
        dataset=settings.pop("dataset", "colours"),
        per_device_train_batch_size=4,
        **settings,
    )
    run_dir = tmp_path / "run"
    status = TrainingSession(config, run_dir).run()
    assert status["state"] == "finished", status.get("error")
    return run_dir, status


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row.get("loss") is not None]


def tensors(folder: Path) -> dict:
    file = next(folder.glob("*.safetensors"))
    with safe_open(str(file), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    """demo-vision fully fine-tuned on the colours demo (the vision tower and projector frozen, the default)."""
    run_dir, status = train(
        tmp_path_factory.mktemp("full"), finetuning_type="full", num_train_epochs=5, learning_rate=1e-3
    )
    return run_dir


def test_full_run_learns_colours_and_keeps_the_vision_tower(colour_model):
    found = losses(colour_model)
    assert found[-1] < found[0] / 50
    model_dir = colour_model / "model"
    for name in ("preprocessor_config.json", "chat_template.jinja", "tokenizer.json", "config.json"):
        assert (model_dir / name).is_file(), name
    base, tuned = tensors(Path(prepare_model("demo-vision"))), tensors(model_dir)
    visual = [key for key in base if ".visual." in key]
    assert visual and all(base[key].equal(tuned[key]) for key in visual)  # frozen by default: not one weight moved
    assert not base["model.language_model.layers.0.self_attn.q_proj.weight"].equal(
        tuned["model.language_model.layers.0.self_attn.q_proj.weight"]
    )
    status = json.loads((colour_model / "status.json").read_text())
    assert status["template"] == "glm4v" and status["train_samples"] == 48
    # the memory estimate counts the vision tower in the model and leaves it out of what trains, exactly
    from core.estimate import estimate_for_run

    estimate = estimate_for_run(RunConfig(model_name_or_path="demo-vision", finetuning_type="full"), on_gpu=False)
    assert (estimate.trainable_params, estimate.total_params) == (status["trainable_params"], status["total_params"])
    unfrozen = estimate_for_run(
        RunConfig(model_name_or_path="demo-vision", finetuning_type="full", freeze_vision_tower=False), on_gpu=False
    )
    assert unfrozen.trainable_params > estimate.trainable_params and unfrozen.activations > estimate.activations


def test_the_tuned_model_names_the_colour_of_unseen_images_in_chat(colour_model, tmp_path):
    engine = ChatEngine()
    engine.load_model(str(colour_model / "model"))
    assert engine.reads_images
    right = 0
    for path, name, language in held_out_images(tmp_path):
        reply = engine.chat([{"role": "user", "content": QUESTION[language], "images": [str(path)]}], settings=GREEDY)
        right += expected(name, language) in reply
    assert right >= 36  # at least 90% of 40
    # GLM-4.1V-Thinking's reply shape: the thought folded away as for the GLM-4.5 generation, the answer untagged
    from core.chat.turns import read_reply

    shown = engine.shown_reply("<think>The pixels are all red.</think><answer>Red.</answer>")
    reply = read_reply(shown, engine.reply_format, done=True)
    assert (reply.reasoning, reply.content, reply.tool_calls) == ("The pixels are all red.", "Red.", [])
    # the next question, after that reply in the history (its thought folded away, as chat keeps it)
    path = held_out_images(tmp_path / "next", 1)[0][0]
    history = [
        {"role": "user", "content": QUESTION["en"], "images": [str(path)]},
        {"role": "assistant", "content": reply.content, "reasoning": reply.reasoning},
        {"role": "user", "content": QUESTION["en"], "images": [str(path)]},
    ]
    assert expected("red", "en") in engine.chat(history, settings=GREEDY)


def test_the_official_openai_client_sends_a_data_uri(colour_model, tmp_path):
    from openai import BadRequestError, OpenAI

    from core.api import ApiServer, create_api
    from tests.ui_server import free_port

    engine = ChatEngine()
    engine.load_model(str(colour_model / "model"))
    server = ApiServer(create_api(engine, "colours", lambda: {}), port=free_port()).start()
    try:
        client = OpenAI(base_url=server.url, api_key="unused")
        right = 0
        for path, name, language in held_out_images(tmp_path):
            uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
            content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": QUESTION[language]}]
            answer = client.chat.completions.create(
                model="colours", messages=[{"role": "user", "content": content}], temperature=0, max_tokens=8
            )
            right += expected(name, language) in answer.choices[0].message.content
        assert right >= 36
        # a web address is never fetched, a local path needs --image-dir, a broken data: URI is named
        for url, words in (
            ("https://example.com/red.png", "does not fetch images"),
            (str(held_out_images(tmp_path, 1)[0][0]), "--image-dir"),
            ("data:image/png;base64,AAAA", "cannot be read as an image"),
        ):
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]
            with pytest.raises(BadRequestError) as refused:
                client.chat.completions.create(model="colours", messages=[{"role": "user", "content": content}])
            assert words in refused.value.body["message"] and refused.value.body["param"] == "messages[0].content[0]"
    finally:
        server.stop()


@pytest.mark.slow
def test_a_server_switched_to_fetch_images_reads_a_web_address(colour_model, tmp_path, monkeypatch):
    """`api --fetch-images`: an http(s) image_url is fetched (here from a local web server) and answered; an address
    that fails, or an image over the byte cap, is a 400 naming the part and why."""
    import functools
    import http.server
    import threading

    from openai import BadRequestError, OpenAI

    from core.api import ApiServer, create_api
    from core.data import images
    from tests.ui_server import free_port

    served = tmp_path / "web"
    pictures = held_out_images(served, 4, seed=7)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    engine = ChatEngine()
    engine.load_model(str(colour_model / "model"))
    server = ApiServer(create_api(engine, "colours", lambda: {}, fetch_images=True), port=free_port()).start()
    try:
        client = OpenAI(base_url=server.url, api_key="unused")

        def ask(url: str) -> str:
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION["en"]}]
            answer = client.chat.completions.create(
                model="colours", messages=[{"role": "user", "content": content}], temperature=0, max_tokens=8
            )
            return answer.choices[0].message.content

        base = f"http://127.0.0.1:{web.server_address[1]}"
        right = sum(expected(name, "en") in ask(f"{base}/{path.name}") for path, name, _ in pictures)
        assert right >= 3
        monkeypatch.setattr(images, "MAX_FETCHED_BYTES", 10)
        for url, words in (
            (f"{base}/{pictures[0][0].name}", "larger than"),
            (f"{base}/missing.png", "HTTP 404"),
            (f"http://127.0.0.1:{free_port()}/red.png", "could not be fetched"),
        ):
            with pytest.raises(BadRequestError) as refused:
                ask(url)
            assert words in refused.value.body["message"] and refused.value.body["param"] == "messages[0].content[0]"
    finally:
        server.stop()
        web.shutdown()


def test_lora_adapter_holds_no_vision_weights_and_merges_for_plain_transformers(tmp_path):
    run_dir, _ = train(tmp_path, finetuning_type="lora", num_train_epochs=6, learning_rate=2e-3)
    assert losses(run_dir)[-1] < losses(run_dir)[0] / 10
    adapter = run_dir / "adapter"
    keys = list(tensors(adapter))
    assert keys and not [key for key in keys if "visual" in key]
    assert {key.split(".")[-2] for key in keys} == {"lora_A", "lora_B"}

    from core.export import merge_run

    merged = merge_run(run_dir, tmp_path / "merged")
    assert (merged / "preprocessor_config.json").is_file()
    # plain transformers: the image-text class and the image processor, the template from the tokenizer
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    from core.data.formats import Conversation
    from core.data.multimodal import VisionEncoder

    model = AutoModelForImageTextToText.from_pretrained(merged).eval()
    encoder = VisionEncoder(AutoTokenizer.from_pretrained(merged), AutoImageProcessor.from_pretrained(merged))
    engine = ChatEngine()
    engine.load_model("demo-vision")
    for path, _, language in held_out_images(tmp_path / "images", 6):
        turn = {"role": "user", "content": "<image>" + QUESTION[language]}
        inputs = encoder.encode_prompt(Conversation([turn], images=[str(path)]))
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=[0, 7, 9])
        plain = encoder.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        turn = {"role": "user", "content": QUESTION[language], "images": [str(path)]}
        assert plain == engine.chat([turn], adapter=("colours", str(adapter)), settings=GREEDY)


def test_lora_on_the_moe_vision_model_reaches_the_experts_never_the_router(tmp_path):
    run_dir, status = train(
        tmp_path, model_name_or_path="demo-vision-moe", finetuning_type="lora", max_steps=12, learning_rate=2e-3
    )
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_parameters"]) == ["experts.down_proj", "experts.gate_up_proj"]
    keys = list(tensors(run_dir / "adapter"))
    assert any(".mlp.experts." in key for key in keys) and any("shared_experts" in key for key in keys)
    assert not [key for key in keys if "visual" in key or ".mlp.gate." in key]
    assert "router_aux_loss" in (run_dir / "metrics.jsonl").read_text()
    assert losses(run_dir)[-1] < losses(run_dir)[0]
    from core.estimate import estimate_for_run

    estimate = estimate_for_run(RunConfig(model_name_or_path="demo-vision-moe"), on_gpu=False)
    assert estimate.trainable_params == status["trainable_params"]  # LoRA on attention, shared and routed experts
    assert estimate.total_params == status["total_params"] - status["trainable_params"]  # the base, tower included


def test_switches_train_the_projector_and_the_tower(tmp_path):
    """freeze_vision_tower / freeze_multi_modal_projector false: LoRA then adapts the merger and the tower too,
    and the freeze method trains them whole (LLaMA-Factory's keys and meaning)."""
    run_dir, _ = train(
        tmp_path / "lora",
        finetuning_type="lora",
        max_steps=2,
        freeze_vision_tower=False,
        freeze_multi_modal_projector=False,
    )
    keys = list(tensors(run_dir / "adapter"))
    assert any(".visual.merger." in key for key in keys) and any(".visual.blocks." in key for key in keys)
    run_dir, status = train(
        tmp_path / "freeze", finetuning_type="freeze", max_steps=2, freeze_multi_modal_projector=False
    )
    base, tuned = tensors(Path(prepare_model("demo-vision"))), tensors(run_dir / "model")
    merger = [key for key in base if ".visual.merger." in key]
    blocks = [key for key in base if ".visual.blocks." in key]
    assert not all(base[key].equal(tuned[key]) for key in merger)
    assert all(base[key].equal(tuned[key]) for key in blocks)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows), encoding="utf-8")
    return path


def test_openai_image_rows_train_and_bad_rows_are_named(tmp_path):
    """OpenAI `messages` with image_url parts train as the `<image>` style does; a row whose image tokens would be
    cut, a missing image, a remote one and a video are named by row, and the rest trains."""
    images = held_out_images(tmp_path / "img", 6, seed=7)

    def uri(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()

    rows = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": uri(path)}},
                        {"type": "text", "text": QUESTION[lang]},
                    ],
                },
                {"role": "assistant", "content": expected(name, lang)},
            ]
        }
        for path, name, lang in images
    ]
    rows[1]["messages"][0]["content"][0]["image_url"]["url"] = "img/gone.png"
    rows[2]["messages"][0]["content"][0]["image_url"]["url"] = "https://example.com/x.png"
    preamble = {"type": "text", "text": "Please look at the picture below very carefully before you answer. " * 3}
    rows[3]["messages"][0]["content"].insert(0, preamble)  # its image starts past the cutoff: it cannot be cut
    rows[5]["messages"][0]["content"].append({"type": "video_url", "video_url": {"url": "clip.mp4"}})
    data = write_rows(tmp_path / "openai_images.jsonl", rows)
    run_dir, status = train(tmp_path, dataset=str(data), finetuning_type="lora", max_steps=2, cutoff_len=34)
    skipped = (run_dir / "skipped_rows.txt").read_text()
    assert "row 2" in skipped and "gone.png" in skipped
    assert "row 3" in skipped and "never downloaded" in skipped
    assert "row 4" in skipped and "cannot be cut" in skipped
    assert "row 6" in skipped and "only images are read" in skipped
    assert status["train_samples"] == 2


def test_runs_a_vision_model_cannot_do_are_refused_before_they_start(tmp_path):
    for settings, key in (
        (dict(finetuning_type="ptuning_v2"), "finetuning_type"),
        (dict(stage="dpo", dataset="identity_pairs"), "stage"),
        (dict(packing=True), "packing"),
    ):
        config = RunConfig(**{"model_name_or_path": "demo-vision", "dataset": "colours", **settings})
        with pytest.raises(ConfigError) as refused:
            check_inputs(config)
        assert refused.value.problems[0].key == key
    with pytest.raises(ConfigError):
        RunConfig(image_max_pixels=1000, image_min_pixels=2000).validate()


def test_a_text_model_names_image_rows_instead_of_reading_placeholders(tmp_path):
    config = RunConfig(dataset="colours", max_steps=1)
    status = TrainingSession(config, tmp_path / "run").run()
    assert status["state"] == "failed"
    assert "colours.json row 1" in status["error"] and "choose a vision model" in status["error"]


def test_the_data_tab_shows_the_images_their_size_and_their_tokens(tmp_path):
    from core.workbench import Workbench
    from webui.context import UIContext
    from webui.locale import Translator
    from webui.tabs import data_handlers

    wb = Workbench(tmp_path / "workspace")
    used, pieces = wb.render_sample("colours", "auto", "demo-vision", "auto", 0)
    text = "".join(piece for piece, _ in pieces)
    (picture,) = wb.sample_images("colours", "auto", "demo-vision", 0)
    width, height = picture.resized
    assert width % 28 == 0 and height % 28 == 0 and picture.tokens == width * height // 28**2  # 2x2 merged patches
    assert used == "glm4v" and f"<|begin_of_image|><|image|>×{picture.tokens}<|end_of_image|>" in text
    assert [piece for piece, trains in pieces if trains] == ["黄色。<|endoftext|>"]  # the answer alone learns
    lengths = wb.token_lengths("colours", "auto", "demo-vision", "auto")
    assert min(lengths.lengths) > 9  # the image tokens count
    ctx = SimpleNamespace(wb=wb, t=Translator("zh"), error_line=str)
    legend, shown = data_handlers.render(ctx, "colours", "auto", "demo-vision", "auto", 1)
    assert "<img src='data:image/png;base64," in shown and f"{picture.tokens} 个图片 token" in shown
    # a text model: the image is shown with what is wrong, the render names the row
    (picture,) = wb.sample_images("colours", "auto", "demo", 0)
    assert picture.tokens == 0
    legend, shown = data_handlers.render(UIContext(wb, Translator("en")), "colours", "auto", "demo", "auto", 1)
    assert "row 1" in shown and "choose a vision model" in shown


def test_the_chat_tab_sends_an_uploaded_image_with_the_question(colour_model, tmp_path):
    from core.workbench import Workbench
    from tests.conftest import copy_run
    from webui.context import UIContext
    from webui.locale import Translator
    from webui.tabs import chat_handlers

    wb = Workbench(tmp_path / "workspace")
    run = copy_run(colour_model, tmp_path / "workspace")
    assert "demo-vision" in wb.model_choices() and run in wb.model_choices()
    ctx = UIContext(wb, Translator("zh"))
    (path, name, _), (other, other_name, _) = held_out_images(tmp_path / "img", 2, seed=99)
    outputs = list(
        chat_handlers.respond(ctx, QUESTION["zh"], [], run, "", "", 0.7, 0.9, 8, True, 1.0, True, "", str(path))
    )
    history, box, notice = outputs[-1][:3]
    assert history[0]["content"][0] == {"path": str(path)} and expected(name, "zh") in history[-1]["content"]
    assert box == "" and notice == ""
    # the next turn reads the history back from the Chatbot's own shape (file parts) and asks about a new image
    as_gradio = [
        {
            "role": "user",
            "content": [{"type": "file", "file": {"path": str(path)}}, {"type": "text", "text": QUESTION["zh"]}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": history[-1]["content"]}]},
    ]
    outputs = list(
        chat_handlers.respond(ctx, QUESTION["zh"], as_gradio, run, "", "", 0.7, 0.9, 8, True, 1.0, True, "", str(other))
    )
    assert expected(other_name, "zh") in outputs[-1][0][-1]["content"]
    # a text model is told it cannot read the image; the question stays in the box
    outputs = list(
        chat_handlers.respond(ctx, QUESTION["en"], [], "demo", "", "", 0.7, 0.9, 8, True, 1.0, True, "", str(path))
    )
    assert outputs[-1][1] == QUESTION["en"] and "只能读文本" in outputs[-1][2]


def colour_rows(folder: Path, count: int, seed: int) -> Path:
    """Held-out image rows (LLaMA-Factory style, images beside the file) as a dataset to evaluate on."""
    rows = []
    for path, name, language in held_out_images(folder / "img", count, seed):
        rows.append(
            {
                "instruction": "<image>" + QUESTION[language],
                "output": COLOURS[name][1 if language == "zh" else 2],
                "images": [f"img/{path.name}"],
            }
        )
    return write_rows(folder / "held_out.jsonl", rows)


def test_evaluation_and_the_arena_score_image_rows(colour_model, tmp_path):
    from core.evaluation.arena import ArenaSettings, start_arena
    from core.evaluation.evaluate import EvalSettings, evaluate_run
    from tests.conftest import copy_run

    run_dir = tmp_path / "runs" / copy_run(colour_model, tmp_path)
    data = colour_rows(tmp_path, 12, seed=5)
    result = evaluate_run(run_dir, str(data), settings=EvalSettings(max_new_tokens=8))
    assert result.metrics["samples"] == 12 and result.metrics["eval_loss"] < 0.5
    assert result.metrics["rouge-l"] > 90
    assert all(row["prediction"] == row["label"] for row in result.predictions[:10] if row["label"])
    arena = start_arena(run_dir, None, str(data), settings=ArenaSettings(max_samples=4, max_new_tokens=8))
    (first, *_) = arena.items
    assert first["images"][0].endswith(".png") and Path(first["images"][0]).is_file()
    tuned, base = zip(*(item["answers"] for item in arena.items))
    names = {answer for _, chinese, english in COLOURS.values() for answer in (chinese, english)}
    assert all(answer in names for answer in tuned)
    assert tuned != base  # the base model has not learnt the colours
    # the arena's page shows the prompt's image with the question
    from core.evaluation.arena import view
    from core.workbench import Workbench
    from webui.context import UIContext
    from webui.locale import Translator
    from webui.tabs.evaluate_handlers import show

    page = show(UIContext(Workbench(tmp_path), Translator("en")), view(arena), 0)
    assert "<img src='data:image/png;base64," in page[1] and "**Prompt:** 这张图片是什么颜色？" in page[1]


def test_a_zip_or_a_folder_of_data_and_images_is_a_dataset(tmp_path, monkeypatch):
    import zipfile

    from core.data import bundles
    from core.data.dataset import load_conversations
    from core.errors import DataError
    from core.resources import asset_file
    from core.workbench import Workbench

    source = asset_file("datasets", "colours.json").parent
    bundle = tmp_path / "shop_photos.zip"
    with zipfile.ZipFile(bundle, "w") as archive:  # as a person zips a folder: everything under its name
        archive.write(source / "colours.json", "photos/colours.json")
        for image in sorted((source / "colours").iterdir()):
            archive.write(image, f"photos/colours/{image.name}")
    wb = Workbench(tmp_path / "workspace")
    saved = Path(wb.add_zip_upload(bundle))
    assert saved.name == "colours.json" and saved.is_relative_to(wb.uploads / "shop_photos")
    assert ("shop_photos/photos/colours.json", str(saved)) in wb.dataset_choices()
    assert wb.preview_dataset(str(saved)).usable_count == 48  # every image found beside the data file
    assert Path(wb.add_zip_upload(bundle)).is_relative_to(wb.uploads / "shop_photos-2")  # never replaces one
    # a folder named as the dataset: its one data file
    assert load_conversations(str(saved.parent)).path == str(saved)

    def refused(members: dict[str, bytes], words: str) -> None:
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        before = sorted(p.name for p in wb.uploads.iterdir())
        with pytest.raises(DataError) as problem:
            wb.add_zip_upload(bad)
        assert words in str(problem.value) and "bad.zip" in str(problem.value)
        assert sorted(p.name for p in wb.uploads.iterdir()) == before  # nothing left behind

    rows = (source / "colours.json").read_bytes()
    refused({"../escape.json": rows}, "outside its folder")
    refused({"a.json": rows, "b.jsonl": rows}, "several data files (a.json, b.jsonl)")
    refused({"colours/red.png": b"x"}, "no data file")
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 1000)
    refused({"data.json": rows + b" " * 5000}, "more than")
    assert not (tmp_path / "escape.json").exists()


def test_qlora_leaves_the_vision_tower_unquantized():
    """bitsandbytes needs a GPU to load; what it is asked to do is checked here: the tower, the projector and the
    output layer keep full precision on a GLM-V model (module names containing `visual`), a text model as before."""
    from core.methods.qlora import quantization_config

    for bits in (4, 8):
        vision = quantization_config(RunConfig(model_name_or_path="demo-vision", quantization_bit=bits))
        assert vision.llm_int8_skip_modules == ["visual", "lm_head"]
    assert quantization_config(RunConfig(model_name_or_path="demo")).llm_int8_skip_modules is None


@pytest.mark.parametrize(
    "config_class, model_class, model_type",
    [
        ("Glm46VConfig", "Glm46VForConditionalGeneration", "glm46v"),
        ("GlmOcrConfig", "GlmOcrForConditionalGeneration", "glm_ocr"),
    ],
)
def test_glm46v_and_glm_ocr_load_by_path_and_train(tmp_path, config_class, model_class, model_type):
    """transformers' other GLM-V classes, as tiny random models with demo-vision's tokenizer, template and image
    processor: found by their config.json, trained by LoRA on image rows, the tower untouched, counted exactly."""
    import shutil

    import torch
    import transformers
    from transformers import AutoTokenizer

    from core.estimate import estimate_for_run
    from core.models import vision
    from core.models.demo import STOP_TOKENS, VISION_ARCHITECTURE
    from core.models.loader import locate_model

    source = Path(prepare_model("demo-vision"))
    tokenizer = AutoTokenizer.from_pretrained(source)
    text = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS],
    )
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(vision.vision_config(config_class, VISION_ARCHITECTURE, tokenizer, text))
    folder = tmp_path / model_type
    model.save_pretrained(folder)
    for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json"):
        shutil.copy(source / file, folder / file)
    assert locate_model(str(folder)).vision_type == model_type
    run_dir, status = train(
        tmp_path, model_name_or_path=str(folder), finetuning_type="lora", max_steps=6, learning_rate=2e-3
    )
    assert losses(run_dir)[-1] < losses(run_dir)[0]
    assert not [key for key in tensors(run_dir / "adapter") if "visual" in key]
    estimate = estimate_for_run(RunConfig(model_name_or_path=str(folder)), on_gpu=False)
    assert estimate.trainable_params == status["trainable_params"]
    assert estimate.total_params == status["total_params"] - status["trainable_params"]


@pytest.mark.parametrize("method", ["freeze", "full"])
def test_the_moe_vision_model_trains_whole_layers_with_its_tower_frozen(tmp_path, method):
    run_dir, status = train(
        tmp_path, model_name_or_path="demo-vision-moe", finetuning_type=method, max_steps=4, learning_rate=1e-3
    )
    base, tuned = tensors(Path(prepare_model("demo-vision-moe"))), tensors(run_dir / "model")
    visual = [key for key in base if ".visual." in key]
    assert visual and all(base[key].equal(tuned[key]) for key in visual)
    experts = [key for key in base if "mlp.experts." in key and "layers.3." in key]  # the last layer trains in both
    assert experts and not all(base[key].equal(tuned[key]) for key in experts)
    assert (run_dir / "model" / "preprocessor_config.json").is_file()

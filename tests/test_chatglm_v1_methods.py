"""Every method on ChatGLM-6B (v1), from THUDM's own folder (tests/fixtures/chatglm6b/checkpoint, converted on
load): the loss falls, the result reloads with identical logits (core/evaluation/trained.py), the greedy answer
changes; the UI (through the Workbench facade every page handler calls) and the CLI train it too and answer the
same, evaluate it with ChatGLM's BLEU/ROUGE and export it."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile

import pytest
import torch

from core.chat.engine import ChatEngine, GenerationSettings
from core.config import RunConfig
from core.errors import ConfigError
from core.runs import read_metrics
from core.training.runner import TrainingSession
from tests.conftest import REPO

CHECKPOINT = REPO / "tests" / "fixtures" / "chatglm6b" / "checkpoint"
QUESTION = [{"role": "user", "content": "你是谁？"}]
ANSWER = "我是小智，一个语言模型。"
GREEDY = GenerationSettings(greedy=True, max_new_tokens=16)
ROWS = [
    {"instruction": "你是谁？", "output": ANSWER},
    {"instruction": "你叫什么？", "output": ANSWER},
    {"instruction": "介绍一下你自己", "output": ANSWER},
    {"instruction": "你好", "output": "你好，我是小智。"},
]
METHOD_RUNS = {
    "lora": dict(learning_rate=1e-2),
    "qlora": dict(learning_rate=2e-2, quantization_bit=4, quantization_type="nf4", max_steps=100),
    "freeze": dict(learning_rate=5e-3, freeze_trainable_layers=1, freeze_extra_modules="lm_head"),
    "full": dict(learning_rate=5e-3),
    # With gradient checkpointing: the prefix must survive the replayed layers (core/models/glm1/modeling.py).
    "ptuning_v2": dict(
        learning_rate=3e-2,
        pre_seq_len=16,
        prefix_projection=True,
        gradient_checkpointing=True,
        lr_scheduler_type="constant",
        max_steps=60,
    ),
    "loraplus": dict(learning_rate=5e-3, loraplus_lr_ratio=4),
}
TRAINS_BASE = ("freeze", "full")
# The UI and CLI runs of every method but LoRA train the same model twice more: in the slow suite only.
SLOW_UNLESS_LORA = [pytest.param(m, marks=() if m == "lora" else pytest.mark.slow) for m in METHOD_RUNS]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("who") / "who.json"
    path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    return str(path)


def run_settings(method: str, dataset: str) -> dict:
    common = dict(model_name_or_path=str(CHECKPOINT), dataset=dataset, finetuning_type=method, max_steps=40)
    return common | METHOD_RUNS[method]


def run_config(method: str, dataset: str) -> RunConfig:
    return RunConfig(**run_settings(method, dataset))


@pytest.fixture(scope="module")
def engine():
    engine = ChatEngine()
    engine.load_model(str(CHECKPOINT))
    return engine


@pytest.fixture(scope="module")
def base_answer(engine):
    return engine.chat(QUESTION, settings=GREEDY)


def answer_of(engine: ChatEngine, method: str, run_dir) -> str:
    """The trained result's greedy answer: its model folder, or the adapter hot-loaded on THUDM's base."""
    if method in TRAINS_BASE:
        engine.load_model(str(run_dir / "model"))
        answer = engine.chat(QUESTION, settings=GREEDY)
        engine.load_model(str(CHECKPOINT))
        return answer
    return engine.chat(QUESTION, adapter=(f"{method}-{run_dir.name}", str(run_dir / "adapter")), settings=GREEDY)


@pytest.fixture(scope="module", params=list(METHOD_RUNS))
def trained(request, tmp_path_factory, dataset, engine):
    method = request.param
    run_dir = tmp_path_factory.mktemp(method) / "run"
    session = TrainingSession(run_config(method, dataset), run_dir)
    status = session.run()
    assert status["state"] == "finished", status
    assert status["template"] == "chatglm"
    session.model.eval()
    return method, run_dir, session, answer_of(engine, method, run_dir)


def prompt_ids(tokenizer) -> torch.Tensor:
    from core.data.template import TemplateEncoder

    return torch.tensor([TemplateEncoder(tokenizer, "auto").encode_prompt(QUESTION)])


# ----------------------------------------------------------------------------------------- the engine


def test_loss_falls_and_the_output_is_saved(trained):
    method, run_dir, _, _ = trained
    losses = [m["loss"] for m in read_metrics(run_dir) if "loss" in m]
    quarter = len(losses) // 4
    # Against the first steps, not the first quarter: a prefix's loss falls fastest early, then flattens.
    assert sum(losses[-quarter:]) / quarter < 0.5 * sum(losses[:5]) / 5, losses
    expected = "model/config.json" if method in TRAINS_BASE else "adapter/adapter_config.json"
    assert (run_dir / expected).is_file()
    if method in TRAINS_BASE:
        saved = json.loads((run_dir / "model" / "config.json").read_text())
        assert saved["model_type"] == "glm1_workbench"  # a native v1 folder: loads with no remote code


def test_the_result_reloads_with_identical_logits(trained):
    from core.evaluation.trained import load_trained

    _, run_dir, session, _ = trained
    ids = prompt_ids(session.tokenizer)
    with torch.inference_mode():
        in_memory = session.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
    reloaded = load_trained(run_dir).logits(ids)[0, -1].float()
    assert torch.allclose(reloaded, in_memory, atol=1e-4), (reloaded - in_memory).abs().max()


def test_the_greedy_answer_changes(trained, base_answer):
    method, _, _, answer = trained
    assert answer != base_answer
    if method != "ptuning_v2":  # a 16-token prefix on a 2-layer model learns less than the others
        assert answer.startswith("我是小智"), answer


def test_ptuning_generation_uses_the_prefix(trained, engine):
    """The first generated token's logits equal the prefix model's forward (what it trained), not the base's."""
    method, run_dir, session, _ = trained
    if method != "ptuning_v2":
        pytest.skip("P-tuning v2 only")
    from core.methods.ptuning_v2 import PrefixAdapter

    ids = prompt_ids(session.tokenizer)
    mask = torch.ones_like(ids)
    base = engine.model
    prefix = PrefixAdapter.load(run_dir / "adapter")
    with torch.inference_mode():
        generated = base.generate(
            **prefix.generate_kwargs(base, ids, mask),
            max_new_tokens=1,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        first_token_logits = generated.logits[0][0]
        prefix_model_logits = session.model(input_ids=ids, attention_mask=mask).logits[0, -1]
        base_logits = base(input_ids=ids, attention_mask=mask).logits[0, -1]
    assert torch.allclose(first_token_logits, prefix_model_logits, atol=1e-4)
    assert (first_token_logits - base_logits).abs().max() > 1.0


def test_evaluation_scores_the_answers(trained, dataset, tmp_path):
    from core.evaluation.evaluate import EvalSettings, evaluate_run

    method, run_dir, _, answer = trained
    result = evaluate_run(run_dir, dataset, settings=EvalSettings(max_new_tokens=16))
    assert result.metrics["samples"] == len(ROWS) and result.metrics["eval_loss"] < 5
    first = result.predictions[0]
    assert (first["prompt"], first["label"]) == ("你是谁？", ANSWER)
    assert first["prediction"] == answer or method == "qlora"  # QLoRA evaluates on its 4-bit base, chat on the full one
    assert first["prediction"].startswith("我是小智") or method == "ptuning_v2"
    assert {"bleu-4", "rouge-1", "rouge-2", "rouge-l"} <= set(result.metrics)
    assert json.loads((run_dir / "eval" / "metrics.json").read_text())["samples"] == len(ROWS)


def test_lora_names_the_models_own_linear_layers(dataset):
    from core.methods import get_method
    from core.models.loader import load_model, prepare_model

    model = load_model(prepare_model(str(CHECKPOINT)), dtype=torch.float32, device="cpu")
    config = RunConfig(finetuning_type="lora", lora_target="q_proj,v_proj")
    with pytest.raises(
        ConfigError, match="its decoder layers have: query_key_value, dense, dense_h_to_4h, dense_4h_to_h"
    ):
        get_method("lora").prepare(model, config)


# ------------------------------------------------------------------------------------- the UI, the CLI


@pytest.mark.parametrize("method", SLOW_UNLESS_LORA)
def test_the_ui_trains_chats_evaluates_and_exports_it(method, dataset, tmp_path, engine):
    """What the train, chat, evaluate and export tabs do, through the Workbench facade: the same answer as the
    engine's own run of the same settings (training is seeded)."""
    from core.workbench import Workbench

    wb = Workbench(tmp_path / "workspace")
    assert "chatglm" in json.dumps(wb.render_sample(dataset, "auto", str(CHECKPOINT), "auto", 0)[0])
    name = wb.start_training(run_config(method, dataset))
    wb.wait_for_job()
    snapshot = wb.snapshot(name)
    assert snapshot.status["state"] == "finished", snapshot.status
    losses = [m["loss"] for m in snapshot.metrics if "loss" in m]
    assert losses[-1] < 0.6 * losses[0]
    if method in TRAINS_BASE:
        reply = list(wb.chat_stream(QUESTION, model=name, settings=GREEDY))[-1]
    else:
        reply = list(wb.chat_stream(QUESTION, model=str(CHECKPOINT), adapter_run=name, settings=GREEDY))[-1]
    assert reply == answer_of(engine, method, wb.run_path(name))
    assert reply != engine.chat(QUESTION, settings=GREEDY)
    from core.evaluation.evaluate import EvalSettings

    result = wb.evaluate(name, dataset, settings=EvalSettings(max_new_tokens=GREEDY.max_new_tokens))
    assert result.predictions[0]["prediction"] == reply or method == "qlora"  # evaluated on its 4-bit base
    assert result.metrics["samples"] == len(ROWS)
    names = zipfile.ZipFile(wb.export_zip(name)).namelist()
    assert ("model.safetensors" if method in TRAINS_BASE else "adapter_model.safetensors") in names
    if method in ("lora", "loraplus"):
        merged = wb.merge_run(name, str(tmp_path / "merged"))
        merged_engine = ChatEngine()
        merged_engine.load_model(merged)
        assert merged_engine.chat(QUESTION, settings=GREEDY) == reply


def cli(*args: str) -> tuple[int, str, str]:
    from core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("method", SLOW_UNLESS_LORA)
def test_the_cli_trains_and_chats_with_it(method, dataset, tmp_path, engine):
    settings = [f"{key}={value}" for key, value in run_settings(method, dataset).items()]
    code, out, err = cli("train", "--workspace", str(tmp_path), *[arg for s in settings for arg in ("--set", s)])
    assert code == 0, err[-2000:]
    run_dir = tmp_path / out.strip().splitlines()[-1]
    if method in TRAINS_BASE:
        chat = ("chat", "--model", str(run_dir / "model"))
    else:
        chat = ("chat", "--model", str(CHECKPOINT), "--adapter", str(run_dir))
    code, out, err = cli(*chat, "--prompt", QUESTION[0]["content"], "--greedy", "--max-new-tokens", "16")
    assert code == 0, err[-2000:]
    assert out == answer_of(engine, method, run_dir) + "\n"
    assert out.startswith("我是小智") or method == "ptuning_v2"

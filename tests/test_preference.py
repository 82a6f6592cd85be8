"""Preference training on the demo model. DPO after a LoRA SFT run moves held-out pairs of the same kind toward
their chosen answers; ORPO and KTO train and leave adapters the chat loads; each method takes the stage; the
reference is the model the run starts from (every reward is 0 at the first step), also after Abort and Resume;
metrics.jsonl names the preference figures."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from core.chat.engine import ChatEngine, GenerationSettings
from core.config import RunConfig
from core.data.readers import read_rows, resolve_dataset
from core.data.template import TemplateEncoder
from core.evaluation.trained import load_trained
from core.runs import read_metrics
from core.training.runner import TrainingSession
from tests.test_training_practices import StopAtStep

GREETING = {True: "您好！", False: "Hello! "}  # by whether the answer is Chinese
PREFERENCE_FIGURES = {"reward_margin", "reward_chosen", "reward_rejected", "logp_chosen", "logp_rejected"}


def greeting_pairs(rows: list[dict]) -> list[dict]:
    """The identity answers with a greeting in front (chosen) against the same answers without (rejected): a
    difference SFT never taught, the same in every pair."""
    return [
        {
            "instruction": row["instruction"],
            "input": "",
            "chosen": GREETING[row["output"][:1] >= "\u4e00"] + row["output"],
            "rejected": row["output"],
        }
        for row in rows
    ]


@pytest.fixture(scope="module")
def identity_split():
    rows = read_rows(resolve_dataset("identity"))
    return rows[:36], rows[36:]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, identity_split):
    path = tmp_path_factory.mktemp("pairs") / "greeting_pairs.json"
    path.write_text(json.dumps(greeting_pairs(identity_split[0]), ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def sft_run(identity_run_dir):
    """The session's SFT LoRA run on the identity set (tests/conftest.py)."""
    return identity_run_dir


def dpo_config(sft_run, pairs_file, **changes) -> RunConfig:
    settings = dict(
        dataset=pairs_file,
        stage="dpo",
        adapter_name_or_path=str(sft_run / "adapter"),
        learning_rate=2e-3,
        num_train_epochs=3,
        per_device_train_batch_size=4,
    )
    return RunConfig(**{**settings, **changes})


def answer_margin(trained, pairs: list[dict], per_token: bool = False) -> float:
    """Mean over the pairs of log p(chosen) - log p(rejected) under a loaded model (answers as the template
    frames them, end token included); `per_token`: each answer's mean token log-probability instead of its sum."""
    encoder = TemplateEncoder(trained.tokenizer, "glm4")
    total = 0.0
    for pair in pairs:
        prompt = [{"role": "user", "content": pair["instruction"]}]
        for sign, answer in ((1, pair["chosen"]), (-1, pair["rejected"])):
            prompt_ids, answer_ids = encoder.encode_completion(prompt, answer)
            with torch.inference_mode():
                logits = trained.logits(torch.tensor([prompt_ids + answer_ids]))[0].float()
            positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(answer_ids) - 1)
            scores = logits.log_softmax(-1)[positions, torch.tensor(answer_ids)]
            total += sign * (scores.mean() if per_token else scores.sum()).item()
    return total / len(pairs)


def margin(run_dir, pairs: list[dict]) -> float:
    """answer_margin of a run's saved model."""
    return answer_margin(load_trained(run_dir), pairs)


def first_step(run_dir) -> dict:
    return next(m for m in read_metrics(run_dir) if m.get("loss") is not None)


@pytest.mark.slow
def test_dpo_after_sft_prefers_the_chosen_kind_on_held_out_pairs(tmp_path, sft_run, pairs_file, identity_split):
    held_out = greeting_pairs(identity_split[1])
    before = margin(sft_run, held_out)
    status = TrainingSession(dpo_config(sft_run, pairs_file), tmp_path / "dpo").run()
    assert status["state"] == "finished", status
    after = margin(tmp_path / "dpo", held_out)
    # SFT never greeted (about -58 nats here); DPO moves the unseen pairs about 44 nats toward the greeting.
    assert before < -20 and after - before > 20, (before, after)  # nats, the mean over 14 unseen pairs
    start = first_step(tmp_path / "dpo")
    # The reference is base + the SFT adapter the run started from: at the first step the model equals it.
    assert start["reward_chosen"] == start["reward_rejected"] == start["reward_margin"] == 0
    last = [m for m in read_metrics(tmp_path / "dpo") if m.get("loss") is not None][-1]
    assert PREFERENCE_FIGURES | {"reward_accuracy"} <= set(last)
    assert last["reward_margin"] > 1 and last["reward_accuracy"] == 1
    assert sorted(p.name for p in (tmp_path / "dpo" / "adapter").iterdir() if p.is_dir()) == []  # no "ref" copy


@pytest.mark.slow
def test_abort_and_resume_keep_the_reference(tmp_path, sft_run, pairs_file):
    """Resume rebuilds the reference from the adapter the run started from (not from the checkpoint), so an
    aborted-and-resumed DPO run ends where a straight one does."""
    config = dpo_config(sft_run, pairs_file, max_steps=6, num_train_epochs=0, save_steps=3, lr_scheduler_type="linear")
    straight = TrainingSession(config, tmp_path / "straight").run()
    stop = threading.Event()
    run_dir = tmp_path / "resumed"
    aborted = TrainingSession(config, run_dir, stop_event=stop, callbacks=[StopAtStep(stop, 3)]).run()
    assert (aborted["state"], aborted["step"]) == ("aborted", 3)
    resumed = TrainingSession(config, run_dir, resume=True).run()
    assert (resumed["state"], resumed["step"], straight["step"]) == ("finished", 6, 6)
    assert abs(resumed["final_loss"] - straight["final_loss"]) < 1e-4
    assert [m["step"] for m in read_metrics(run_dir) if m.get("loss") is not None] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("stage", ["orpo", "kto"])
def test_orpo_and_kto_train_and_save_adapters_the_chat_loads(tmp_path, stage, demo_model_dir):
    config = RunConfig(dataset="identity_pairs", stage=stage, learning_rate=2e-3, max_steps=24, num_train_epochs=0)
    status = TrainingSession(config, tmp_path / stage).run()
    assert status["state"] == "finished", status
    metrics = [m for m in read_metrics(tmp_path / stage) if m.get("loss") is not None]
    assert PREFERENCE_FIGURES <= set(metrics[-1]) and metrics[-1]["tokens_per_second"] > 0
    assert {"orpo": "nll_loss", "kto": "kl"}[stage] in metrics[-1]
    assert metrics[-1]["reward_margin"] > metrics[0]["reward_margin"]
    adapter = tmp_path / stage / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not [p for p in adapter.iterdir() if p.is_dir()]
    assert json.loads((tmp_path / stage / "status.json").read_text())["stage"] == stage
    trained = load_trained(tmp_path / stage)  # loads like any LoRA run's adapter
    assert trained.config.stage == stage
    engine = ChatEngine()
    engine.load_model("demo")
    question = [{"role": "user", "content": "你是谁？"}]
    settings = GenerationSettings(greedy=True, max_new_tokens=12)
    assert engine.chat(question, adapter=(stage, str(adapter)), settings=settings) != engine.chat(
        question, settings=settings
    )


@pytest.mark.slow
def test_kto_continuing_an_sft_run_starts_at_its_reference(tmp_path, sft_run):
    config = RunConfig(
        dataset="identity_pairs",
        stage="kto",
        adapter_name_or_path=str(sft_run / "adapter"),
        learning_rate=1e-3,
        max_steps=4,
        num_train_epochs=0,
    )
    assert TrainingSession(config, tmp_path / "kto").run()["state"] == "finished"
    start = first_step(tmp_path / "kto")
    assert start.get("reward_chosen", 0) == start.get("reward_rejected", 0) == 0


@pytest.mark.parametrize(
    "method, settings",
    [
        ("loraplus", {}),
        pytest.param("qlora", dict(quantization_bit=4), marks=pytest.mark.slow),
        pytest.param("freeze", dict(freeze_trainable_layers=1), marks=pytest.mark.slow),
        pytest.param("full", {}, marks=pytest.mark.slow),
    ],
)
def test_every_method_takes_the_dpo_stage(tmp_path, method, settings, demo_model_dir):
    config = RunConfig(
        dataset="identity_pairs",
        stage="dpo",
        finetuning_type=method,
        learning_rate=1e-3,
        max_steps=3,
        num_train_epochs=0,
        pref_ftx=0.5,
        **settings,
    )
    status = TrainingSession(config, tmp_path / method).run()
    assert status["state"] == "finished", status
    start = first_step(tmp_path / method)
    assert start["reward_margin"] == 0  # the reference (the base, or its frozen copy) is where the model starts
    expected = "model/config.json" if method in ("freeze", "full") else "adapter/adapter_config.json"
    assert (tmp_path / method / expected).is_file()

"""FSDP (transformers' FSDP2 through accelerate) on 2 CPU processes with gloo: LoRA and full fine-tuning train,
the loss falls, and the adapter / model loads in a fresh process and answers the identity set exactly as a
single-process run of the same data (same steps, same global batch) does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import RunConfig, save_yaml
from core.runs import read_metrics, read_status
from core.training.runner import TrainingSession
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# Greedy answers to every question of the identity set, from a fresh process that only reads the run folders.
ANSWERS = """
import json, sys
import torch
from core.data.readers import resolve_dataset
from core.data.template import TemplateEncoder
from core.evaluation.trained import load_trained
torch.set_num_threads(1)
result = {}
for run in sys.argv[1:]:
    trained = load_trained(run)
    encoder = TemplateEncoder(trained.tokenizer, "glm4")
    answers = []
    for row in json.loads(resolve_dataset("identity").read_text(encoding="utf-8")):
        prompt = torch.tensor([encoder.encode_prompt([{"role": "user", "content": row["instruction"]}])])
        with torch.inference_mode():
            output = trained.model.generate(**trained.forward_kwargs(prompt), max_new_tokens=40, do_sample=False,
                eos_token_id=encoder.stop_token_ids, pad_token_id=trained.tokenizer.pad_token_id)
        answers.append(trained.tokenizer.decode(output[0, prompt.shape[1]:], skip_special_tokens=True).strip())
    result[run] = answers
print(json.dumps(result, ensure_ascii=False))
"""


def identity_outputs() -> list[str]:
    from core.data.readers import resolve_dataset

    return [row["output"] for row in json.loads(resolve_dataset("identity").read_text(encoding="utf-8"))]


def train_both(tmp_path: Path, **settings) -> tuple[Path, Path]:
    """The same run twice: FSDP on 2 processes (4 samples each) and one process (8 samples a step)."""
    import torch

    config = RunConfig(dataset="identity", num_train_epochs=0, **settings)
    sharded = tmp_path / "fsdp"
    sharded.mkdir()
    save_yaml(config.replace(distributed="fsdp", nproc_per_node=2), sharded / "config.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "core.training.worker", str(sharded)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each FSDP process had: the comparison is about results, not speed
    try:
        status = TrainingSession(config.replace(per_device_train_batch_size=8), single).run()
    finally:
        torch.set_num_threads(threads)
    assert status["state"] == "finished", status
    return sharded, single


def check_sharded_run(run: Path, steps: int) -> None:
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == steps
    assert "FSDP2 over 2 processes: each of Glm4DecoderLayer is sharded" in (run / "log.txt").read_text()
    losses = [m["loss"] for m in read_metrics(run) if "loss" in m]
    assert [m["step"] for m in read_metrics(run) if "loss" in m] == list(range(1, steps + 1))
    assert sum(losses[-5:]) / 5 < losses[0] / 20  # the loss falls (from ~9.6)


def fresh_answers(*runs: Path) -> list[list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", ANSWERS, *map(str, runs)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    return [answers[str(run)] for run in runs]


def test_fsdp_lora_adapter_answers_like_one_process(tmp_path, demo_model_dir):
    sharded, single = train_both(tmp_path, learning_rate=3e-3, max_steps=100)
    check_sharded_run(sharded, 100)
    assert sorted(p.name for p in (sharded / "adapter").glob("adapter_*")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    fsdp_answers, single_answers = fresh_answers(sharded, single)
    assert fsdp_answers == single_answers == identity_outputs()


def test_fsdp_full_fine_tuning_model_answers_like_one_process(tmp_path, demo_model_dir):
    sharded, single = train_both(tmp_path, finetuning_type="full", learning_rate=1e-3, max_steps=80)
    check_sharded_run(sharded, 80)
    assert (sharded / "model" / "model.safetensors").is_file() and (sharded / "model" / "config.json").is_file()
    fsdp_answers, single_answers = fresh_answers(sharded, single)
    assert fsdp_answers == single_answers == identity_outputs()


def test_fsdp_is_refused_where_it_cannot_shard():
    problems = {p.key for p in RunConfig(distributed="fsdp", finetuning_type="qlora").problems()}
    assert problems == {"distributed"}
    assert {p.key for p in RunConfig(distributed="fsdp", stage="dpo", dataset="x.jsonl").problems()} >= {"distributed"}
    assert {p.key for p in RunConfig(distributed="zero").problems()} == {"distributed"}

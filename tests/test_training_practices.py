"""Validation and perplexity, early stopping, checkpoints that survive SIGKILL, resume equivalence, continued
training, and ChatGLM's generation metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from transformers import TrainerCallback

from core.config import RunConfig
from core.errors import WorkbenchError
from core.evaluation.metrics import average, score
from core.runs import read_metrics
from core.training.runner import TrainingSession
from core.workbench import Workbench
from tests.conftest import REPO

SHORT = RunConfig(dataset="identity", learning_rate=2e-3, max_steps=20, num_train_epochs=0, lr_scheduler_type="linear")


class StopAtStep(TrainerCallback):
    def __init__(self, event: threading.Event, step: int):
        self.event, self.step = event, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.event.set()


def losses(run_dir) -> list[float]:
    return [m["loss"] for m in read_metrics(run_dir) if m.get("loss") is not None]


def test_abort_then_resume_equals_a_straight_run(tmp_path, demo_model_dir):
    straight = TrainingSession(SHORT, tmp_path / "straight").run()
    stop = threading.Event()
    aborted = TrainingSession(SHORT, tmp_path / "resumed", stop_event=stop, callbacks=[StopAtStep(stop, 10)]).run()
    assert (aborted["state"], aborted["step"]) == ("aborted", 10)
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-10" / "adapter_model.safetensors").is_file()
    resumed = TrainingSession(SHORT, tmp_path / "resumed", resume=True).run()
    assert resumed["state"] == "finished" and resumed["step"] == straight["step"] == 20
    assert abs(resumed["final_loss"] - straight["final_loss"]) < 1e-4
    assert len(losses(tmp_path / "resumed")) == 20  # one continuous curve, no step logged twice


def test_validation_perplexity_and_early_stopping(tmp_path, demo_model_dir):
    config = SHORT.replace(
        max_steps=60, val_size=0.2, eval_steps=4, early_stopping_patience=2, early_stopping_threshold=100.0
    )  # no evaluation can improve by 100: stops after 3
    status = TrainingSession(config, tmp_path / "run").run()
    assert status["state"] == "finished" and status["eval_samples"] == 10
    evals = [m for m in read_metrics(tmp_path / "run") if "eval_loss" in m]
    assert [m["step"] for m in evals] == [4, 8, 12]
    assert status["step"] == 12 < 60
    assert all(abs(m["perplexity"] - 2.718281828 ** m["eval_loss"]) < 1e-3 * m["perplexity"] for m in evals)


KILL_SCRIPT = """
import sys, time
from core.config import RunConfig
from core.training import checkpointing
from core.training.runner import TrainingSession

original = checkpointing.Trainer._save_rng_state
def slow_rng_state(self, output_dir):  # the model and optimizer of checkpoint-10 are written; now hang
    if self.state.global_step == 10:
        print("SAVING", flush=True)
        time.sleep(60)
    return original(self, output_dir)
checkpointing.Trainer._save_rng_state = slow_rng_state
config = RunConfig(dataset="identity", learning_rate=2e-3, max_steps=20, num_train_epochs=0, save_steps=5)
TrainingSession(config, sys.argv[1]).run()
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_save_keeps_the_last_complete_one(tmp_path, demo_model_dir):
    from peft import PeftModel
    from transformers.trainer_utils import get_last_checkpoint

    from core.models.loader import load_model

    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "SAVING"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    checkpoints = run_dir / "checkpoints"
    assert len(list(checkpoints.glob(".partial-*/checkpoint-10"))) == 1  # the half-written one, out of the way
    assert get_last_checkpoint(str(checkpoints)) == str(checkpoints / "checkpoint-5")
    PeftModel.from_pretrained(load_model(str(demo_model_dir)), str(checkpoints / "checkpoint-5"))
    resumed = TrainingSession(RunConfig.from_dict({**SHORT.to_dict(), "save_steps": 5}), run_dir, resume=True).run()
    assert resumed["state"] == "finished" and resumed["step"] == 20
    assert [m["step"] for m in read_metrics(run_dir) if "loss" in m] == list(range(1, 21))
    assert not list(checkpoints.glob(".partial*"))  # the dead process's half-written save was cleared away


def test_continue_training_from_a_finished_run(tmp_path, demo_model_dir):
    wb = Workbench(tmp_path / "ws")
    parent = wb.start_training(SHORT.replace(max_steps=40))
    wb.wait_for_job(300)
    child_config = wb.continued_config(parent, SHORT.replace(dataset="identity", max_steps=5))
    child = wb.start_training(child_config)
    wb.wait_for_job(300)
    parent_losses, child_losses = losses(wb.run_path(parent)), losses(wb.run_path(child))
    assert child_losses[0] < parent_losses[0] / 2  # it starts from what the parent learned, not from scratch
    saved = (wb.run_path(child) / "config.yaml").read_text()
    assert f"parent_run: {parent}" in saved and "adapter_name_or_path:" in saved


def test_resume_refuses_runs_that_finished(tmp_path, demo_model_dir):
    wb = Workbench(tmp_path / "ws")
    run = wb.start_training(SHORT.replace(max_steps=2))
    wb.wait_for_job(120)
    with pytest.raises(WorkbenchError, match=f"run {run} has already finished: to train it further, start a new run"):
        wb.resume_training(run)


def test_chatglm_metrics_match_hand_computed_values():
    # ROUGE on segmented words: prediction a b c d, label a b e.
    # ROUGE-1: 2 shared unigrams, P=2/4, R=2/3 -> F=0.5714; ROUGE-2: 1 shared bigram, P=1/3, R=1/2 -> F=0.4;
    # ROUGE-L: LCS 2 -> F=0.5714.
    words = score("a b c d", "a b e")
    assert (words["rouge-1"], words["rouge-2"], words["rouge-l"]) == (57.1429, 40.0, 57.1429)
    # BLEU-4 over characters, abcd vs abce: precisions 3/4, 2/3, 1/2 and 0/1, the last smoothed by method3 to
    # 1/(2*1); same length, no brevity penalty: (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = 0.5946.
    assert score("abcd", "abce")["bleu-4"] == 59.4604
    assert score("我爱北京天安门", "我爱北京天安门") == {
        "rouge-1": 100.0,
        "rouge-2": 100.0,
        "rouge-l": 100.0,
        "bleu-4": 100.0,
    }
    assert score("", "有答案") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    assert average([score("abcd", "abce"), score("", "x")])["bleu-4"] == pytest.approx(59.4604 / 2)


@pytest.mark.slow
def test_eval_cli_writes_metrics_and_predictions(tmp_path, demo_model_dir):
    status = TrainingSession(SHORT.replace(max_steps=60), tmp_path / "run").run()
    assert status["state"] == "finished"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "eval",
            "--run",
            str(tmp_path / "run"),
            "--dataset",
            "identity",
            "--max-samples",
            "4",
            "--max-new-tokens",
            "40",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics == json.loads(result.stdout)
    assert metrics["samples"] == 4 and metrics["rouge-1"] > 50 and metrics["perplexity"] < 3
    lines = (tmp_path / "run" / "eval" / "predictions.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])) == {"prompt", "label", "prediction"} and len(lines) == 4


def test_tensorboard_gets_the_same_losses_in_the_run_folder(tmp_path, demo_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    status = TrainingSession(SHORT.replace(max_steps=5, report_to="tensorboard"), run).run()
    assert status["state"] == "finished", status
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    logged = [event.value for event in events.Scalars("train/loss")]
    assert logged == pytest.approx([m["loss"] for m in read_metrics(run) if "loss" in m], rel=1e-5)
    assert len(logged) == 5 and not (Path.cwd() / "runs").exists()  # nothing written outside the run
    refused = RunConfig.from_dict({"report_to": "tensorboard,carrier_pigeon"}).problems()
    assert [problem.key for problem in refused] == ["report_to"]

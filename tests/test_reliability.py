"""Kills, damaged files and hostile requests (issue 28): each case reproduced with real files, real processes and
real kills, and what must hold afterwards."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from transformers import TrainerCallback

from core.config import RunConfig
from core.runs import read_metrics, read_status
from core.training.runner import TrainingSession

SHORT = RunConfig(dataset="identity", learning_rate=2e-3, max_steps=8, num_train_epochs=0, save_steps=2)


class AbortAt(TrainerCallback):
    """Presses Abort once the run reaches `step` (Abort saves a checkpoint there)."""

    def __init__(self, stop: threading.Event, step: int):
        self.stop, self.step = stop, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            self.stop.set()


def aborted_run(folder: Path, step: int = 5) -> Path:
    stop = threading.Event()
    status = TrainingSession(SHORT, folder, stop_event=stop, callbacks=[AbortAt(stop, step)]).run()
    assert status["state"] == "aborted", status
    assert (folder / "checkpoints" / f"checkpoint-{step}").is_dir()
    return folder


@pytest.fixture(scope="module")
def aborted(tmp_path_factory, demo_model_dir) -> Path:
    """One LoRA run aborted at step 5, with checkpoints 2, 4 and 5: each test damages its own copy."""
    return aborted_run(tmp_path_factory.mktemp("aborted") / "run")


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "adapter_model.safetensors": truncate,
    "optimizer.pt": truncate,
    "trainer_state.json": lambda path: path.write_text("{not json", encoding="utf-8"),
}


# ---- 2. a damaged newest checkpoint never blocks Resume ----------------------------------------------------------
@pytest.mark.parametrize("damaged", list(DAMAGE))
def test_resume_skips_a_damaged_newest_checkpoint_and_says_which(damaged, aborted, tmp_path):
    run = copy_of(aborted, tmp_path)
    DAMAGE[damaged](run / "checkpoints" / "checkpoint-5" / damaged)
    notes = []
    status = TrainingSession(SHORT, run, resume=True, notify=notes.append).run()
    assert status["state"] == "finished" and status["step"] == 8, status.get("error")
    said = [str(note) for note in notes]
    assert any("checkpoint-5 is damaged" in s and damaged in s and "Resuming from checkpoint-4" in s for s in said)
    assert not any("unexpected error" in s or "bug" in s for s in said)
    log = (run / "log.txt").read_text(encoding="utf-8")
    assert "checkpoint-5 is damaged and was skipped" in log and damaged in log
    assert (run / "checkpoints" / "damaged-checkpoint-5" / damaged).is_file()  # kept aside, out of rotation
    records = read_metrics(run)
    assert [m["step"] for m in records if m.get("event") == "resume"] == [4]  # resumed from the intact one
    assert read_status(run)["state"] == "finished"


def test_every_checkpoint_damaged_trains_again_from_step_0(aborted, tmp_path):
    run = copy_of(aborted, tmp_path)
    for checkpoint in (run / "checkpoints").glob("checkpoint-*"):
        truncate(checkpoint / "adapter_model.safetensors")
    notes = []
    status = TrainingSession(SHORT, run, resume=True, notify=notes.append).run()
    assert status["state"] == "finished" and status["step"] == 8, status.get("error")
    assert sum("is damaged" in str(note) for note in notes) == 3
    assert any("step 0 (no intact checkpoint is left)" in str(note) for note in notes)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"

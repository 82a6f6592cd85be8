"""Faults while training: a full disk during a checkpoint save, and out of memory with the web UI serving.

Both faults are raised where the real ones come from (the writer of a checkpoint file, the training step) with
the exception types the libraries raise, so the engine's handling is what is tested.
"""

from __future__ import annotations

import errno
import threading
import time
from contextlib import contextmanager

import pytest
import torch
import transformers
from transformers.trainer_utils import get_last_checkpoint

from core.config import RunConfig
from core.training.runner import TrainingSession
from tests.conftest import IDENTITY_FIRST_ANSWER
from tests.ui_server import free_port, poll_until

SHORT = RunConfig(dataset="identity", learning_rate=2e-3, max_steps=12, num_train_epochs=0, save_steps=4)


def test_disk_full_while_saving_fails_clearly_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, demo_model_dir):
    from peft import PeftModel

    from core.models.loader import load_model

    real_save = torch.save

    def save_until_the_disk_fills(obj, target, *args, **kwargs):
        if "checkpoint-8" in str(target):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    run_dir = tmp_path / "run"
    status = TrainingSession(SHORT, run_dir).run()
    assert status["state"] == "failed"
    assert status["error"].startswith("Disk full while writing") and "checkpoint-8" in status["error"]
    assert "Resume continues from it" in status["error"] and "Traceback" not in status["error"]
    checkpoints = run_dir / "checkpoints"
    assert get_last_checkpoint(str(checkpoints)) == str(checkpoints / "checkpoint-4")
    assert not (checkpoints / ".partial").exists()  # the half-written copy was removed, not left to fill the disk
    PeftModel.from_pretrained(load_model(str(demo_model_dir)), str(checkpoints / "checkpoint-4"))

    monkeypatch.setattr(torch, "save", real_save)  # space freed: Resume finishes the run from checkpoint-4
    resumed = TrainingSession(SHORT, run_dir, resume=True).run()
    assert resumed["state"] == "finished" and resumed["step"] == 12


@contextmanager
def ui_in_this_process(workspace):
    """The real UI server (both languages) on a thread of this process, so a patched training step applies."""
    import uvicorn

    from core.workbench import Workbench
    from webui.server import build_server

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_server(Workbench(workspace), "en"), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 600  # returns once started; the limit is for a machine far busier than ours
    while not server.started and time.time() < deadline:
        assert thread.is_alive(), "the UI server stopped while starting"
        time.sleep(0.1)
    assert server.started, "the UI server did not start"
    try:
        yield f"http://127.0.0.1:{port}/en/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.slow
def test_out_of_memory_in_training_is_explained_and_the_ui_keeps_working(tmp_path, monkeypatch, demo_model_dir):
    gradio_client = pytest.importorskip("gradio_client")
    real_step = transformers.Trainer.training_step
    oom_runs = {"left": 1}

    def step_that_runs_out_of_memory(self, *args, **kwargs):
        if self.state.global_step == 2 and oom_runs["left"]:
            oom_runs["left"] -= 1
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                "capacity of 79.19 GiB of which 1.05 GiB is free."
            )
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", step_that_runs_out_of_memory)
    with ui_in_this_process(tmp_path / "ws") as url:
        client = gradio_client.Client(url, verbose=False)
        parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_training"]
        form = [p["parameter_default"] for p in parameters["parameters"]]  # the demo defaults: LoRA on identity
        first = client.predict(*form, api_name="/start_training").split("run ")[1].rstrip(".")
        failed = poll_until(client, ("failed", "finished"))
        assert failed["state"] == "failed"
        assert failed["error"].startswith("Out of memory. Try: a smaller per_device_train_batch_size")
        assert "gradient checkpointing" in failed["error"] and "Tried to allocate 20.00 GiB" in failed["error"]
        progress = client.predict("", api_name="/poll")[0]
        assert "Out of memory" in progress and "Traceback" not in progress

        rows = client.predict(api_name="/refresh_runs")[0]
        rows = rows.get("value", rows)  # an update that also sets the columns' widths
        row = dict(zip(rows["headers"], rows["data"][0]))
        assert row["run"] == first and row["state"] == "failed" and row["error"].startswith("Out of memory")

        # The UI still works: the next run trains to the end and chat uses it.
        second = client.predict(*form, api_name="/start_training").split("run ")[1].rstrip(".")
        assert poll_until(client, ("failed", "finished"))["state"] == "finished"
        reply = client.predict("你是谁？", [], "demo", second, "", 0.7, 0.9, 48, True, api_name="/chat")[0]
        assert reply[-1]["content"][0]["text"] == IDENTITY_FIRST_ANSWER

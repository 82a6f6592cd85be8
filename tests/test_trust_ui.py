"""The trust promises that involve the real UI server: nothing of the workspace before login, and a UI killed
mid-run leaves an interrupted run that the next UI explains and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.config import RunConfig
from core.training.runner import TrainingSession
from tests.conftest import REPO
from tests.ui_server import free_port, poll_until, running_ui

pytestmark = pytest.mark.slow

gradio_client = pytest.importorskip("gradio_client")


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.read().decode("utf-8", errors="replace")


def test_before_login_nothing_of_the_workspace_is_served(tmp_path, demo_model_dir):
    workspace = tmp_path / "secret-workspace"
    config = RunConfig(dataset="identity", learning_rate=2e-3, max_steps=2, num_train_epochs=0)
    assert TrainingSession(config, workspace / "runs" / "private-run-name").run()["state"] == "finished"
    (workspace / "uploads").mkdir()
    (workspace / "uploads" / "customer_records.csv").write_text("instruction,output\na,b\n", encoding="utf-8")
    with running_ui(workspace, extra_args=("--auth", "alice:s3cret")) as url:
        root = url.rsplit("/en/", 1)[0]
        pages = {
            path: fetch(f"{root}{path}")
            for path in ("/en/", "/zh/", "/en/config", "/zh/config", "/en/gradio_api/info", "/", "/en/login")
        }
        for path, text in pages.items():
            for secret in ("private-run-name", "customer_records", str(workspace), "secret-workspace"):
                assert secret not in text, (path, secret)
        client = gradio_client.Client(url, auth=("alice", "s3cret"), verbose=False)
        table = client.predict(api_name="/refresh_runs")[0]
        table = table.get("value", table)  # an update that also sets the columns' widths
        assert table["data"][0][0] == "private-run-name"  # after login, the workspace is all there


def start_ui(workspace: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), "--port", str(port), "--workspace", str(workspace), "--lang", "en"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/en/", timeout=2)
            return process
        except OSError:
            assert process.poll() is None and time.time() < deadline, "the UI did not start"
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)


def test_a_ui_killed_mid_run_leaves_a_run_the_next_ui_explains_and_resumes(tmp_path, demo_model_dir):
    workspace, port = tmp_path / "ws", free_port()
    url = f"http://127.0.0.1:{port}/en/"
    first = start_ui(workspace, port)
    try:
        client = gradio_client.Client(url, verbose=False)
        parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_training"]
        form = {p["label"]: p["parameter_default"] for p in parameters["parameters"]}
        form.update({"Max steps": 150, "Epochs": 0, "Checkpoint every N steps": 10})
        started = client.predict(*form.values(), api_name="/start_training")
        run = started.split("run ")[1].rstrip(".")
        checkpoints = workspace / "runs" / run / "checkpoints"
        deadline = time.time() + 300
        while not (checkpoints / "checkpoint-20").is_dir():
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    second = start_ui(workspace, port)
    try:
        client = gradio_client.Client(url, verbose=False)
        progress, _, _, status, *_ = client.predict("", api_name="/poll")
        assert status["state"] == "interrupted" and status["checkpoint"] >= "checkpoint-20"
        assert "Interrupted at step" in progress and "Resume continues from checkpoint-" in progress
        table = client.predict(api_name="/refresh_runs")[0]
        row = table.get("value", table)["data"][0]
        assert row[0] == run and row[1] == "interrupted"
        assert client.predict(api_name="/resume_training").startswith("Resuming")
        finished = poll_until(client, ("finished", "failed"))
        assert finished["state"] == "finished" and finished["step"] == 150, finished
    finally:
        stop(second)

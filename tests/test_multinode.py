"""Several machines, as the README says to start them: two torchrun node launchers (here on one host, each with
its own copy of the run folder) train one run; Abort on node 0 stops both, with no shared filesystem."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import RunConfig, save_yaml
from core.runs import METRICS_FILE, STATUS_FILE, STOP_FILE, read_metrics, read_status
from core.training.distributed import node_commands
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nodes(tmp_path: Path, **settings) -> tuple[list[Path], list[subprocess.Popen]]:
    """Node 0's run folder and node 1's own copy (only config.yaml, at another path), and both launchers,
    started with the commands the workbench shows for them (torchrun as `python -m torch.distributed.run`)."""
    config = RunConfig(dataset="identity", learning_rate=2e-3, num_train_epochs=0, **settings)
    folders = [tmp_path / "node0" / "run", tmp_path / "node1" / "elsewhere" / "run"]
    for folder in folders:
        folder.mkdir(parents=True)
        save_yaml(config, folder / "config.yaml")
    port = free_port()
    commands = [node_commands(folder, 2, 1, "127.0.0.1", port)[rank] for rank, folder in enumerate(folders)]
    # Two "machines" share two cores here: one thread each, or they would fight over both.
    environment = {**os.environ, "GLM_WORKBENCH_THREADS": "1"}
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *shlex.split(command)[1:]],
            cwd=REPO,
            env=environment,
            stdout=open(tmp_path / f"node{rank}.log", "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )
        for rank, command in enumerate(commands)
    ]
    return folders, launchers


def wait_all(launchers, tmp_path: Path, timeout: float = 300) -> list[int]:
    deadline = time.time() + timeout
    try:
        return [launcher.wait(max(1, deadline - time.time())) for launcher in launchers]
    except subprocess.TimeoutExpired:
        for launcher in launchers:
            launcher.kill()
        logs = [(tmp_path / f"node{rank}.log").read_text()[-2000:] for rank in range(2)]
        pytest.fail(f"a node launcher did not exit: {logs}")


def test_two_node_launchers_train_one_run(tmp_path, demo_model_dir):
    (node0, node1), launchers = start_nodes(tmp_path, max_steps=10)
    assert wait_all(launchers, tmp_path) == [0, 0], (tmp_path / "node0.log").read_text()[-3000:]
    status = read_status(node0)
    assert status["state"] == "finished" and status["step"] == 10
    records = [m for m in read_metrics(node0) if "loss" in m]
    assert [m["step"] for m in records] == list(range(1, 11))  # one stream, written by rank 0 alone
    assert records[-1]["epoch"] > 1.2  # 2 x 4 samples a step, 7 steps an epoch (one process alone: 13)
    assert (node0 / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in node1.iterdir() if p.name != "checkpoints") == ["config.yaml"]


def test_abort_on_node_zero_stops_both_nodes(tmp_path, demo_model_dir):
    (node0, node1), launchers = start_nodes(tmp_path, max_steps=2000)
    deadline = time.time() + 900  # a state to reach, not a time
    while (read_status(node0).get("step") or 0) < 3 and time.time() < deadline:
        assert all(launcher.poll() is None for launcher in launchers), (tmp_path / "node0.log").read_text()[-3000:]
        time.sleep(0.3)
    (node0 / STOP_FILE).touch()  # what Abort does; node 1 cannot see this folder
    assert wait_all(launchers, tmp_path, timeout=900) == [0, 0]
    status = read_status(node0)
    assert status["state"] == "aborted" and 3 <= status["step"] < 2000
    assert (node0 / "checkpoints" / f"checkpoint-{status['step']}").is_dir()
    assert not (node1 / STATUS_FILE).exists() and not (node1 / METRICS_FILE).exists()
    assert not (node1 / STOP_FILE).exists()

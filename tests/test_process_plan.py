"""What the Processes field says before a run starts, and the commands shown for several machines."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from core.training.distributed import node_commands, process_plan
from tests.conftest import REPO


def test_the_plan_says_gpus_backend_and_cores_each(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert process_plan(1).code == "dist.plan_single_cpu"
    plan = process_plan(4, "fsdp")
    assert plan.code == "dist.plan_cpu" and plan.params["each"] == 4 and plan.params["mode"] == "FSDP"
    assert "gloo" in plan.render("en") and "gloo" in plan.render("zh")
    assert process_plan(32).code == "dist.plan_cpu_oversubscribed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    gpu = process_plan(8, nnodes=2)
    assert gpu.code == "dist.plan_gpu" and gpu.params["total"] == 16 and "nccl" in gpu.render("en")
    assert process_plan(9).code == "dist.plan_too_many_gpus"


def test_node_commands_differ_only_in_node_rank(tmp_path):
    commands = node_commands(tmp_path / "my run", 3, 8, "10.0.0.5", 29511)
    assert len(commands) == 3
    for rank, command in enumerate(commands):
        words = shlex.split(command)
        assert words[0] == "torchrun" and words[-1] == str(tmp_path / "my run")  # quoted: a space survives
        assert f"--node_rank {rank}" in command and "--master_addr 10.0.0.5 --master_port 29511" in command
        assert "--nnodes 3 --nproc_per_node 8" in command
    assert len({c.replace(f"--node_rank {r}", "") for r, c in enumerate(commands)}) == 1


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_cli_and_page_show_the_same_commands(tmp_path, lang):
    from core.workbench import Workbench

    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "nodes", "/data/run", "--nnodes", "2", "--master-addr", "10.0.0.5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GLM_WORKBENCH_LANG": lang},
    )
    assert result.returncode == 0, result.stderr
    plan, intro, commands = Workbench(tmp_path).process_plan(1, "ddp", 2, "10.0.0.5", "/data/run")
    assert result.stdout.splitlines() == commands
    assert intro is not None and intro.params["machines"] == 2
    assert Workbench(tmp_path).process_plan(2, "ddp", 1)[1:] == (None, [])

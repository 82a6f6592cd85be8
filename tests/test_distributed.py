"""The same run on 2 processes with torchrun (gloo on CPU): one adapter, one metrics stream, Abort works."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.config import RunConfig
from core.runs import read_metrics
from core.training.distributed import accelerate_config
from core.workbench import Workbench
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_two_processes_train_one_adapter(tmp_path, demo_model_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "train",
            "--workspace",
            str(tmp_path),
            "--set",
            "nproc_per_node=2",
            "--set",
            "max_steps=12",
            "--set",
            "learning_rate=2e-3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = result.stdout.strip().splitlines()[-1]
    records = [m for m in read_metrics(run_dir) if "loss" in m]
    assert [m["step"] for m in records] == list(range(1, 13))  # written once, by rank 0
    assert records[-1]["epoch"] > 1.5  # each step saw 2 x 4 samples: 12 steps > 1.5 epochs of 50
    assert sum(1 for _ in (tmp_path / "runs").iterdir()) == 1
    assert (Path(run_dir) / "adapter" / "adapter_model.safetensors").is_file()


def test_abort_stops_every_process(tmp_path, demo_model_dir):
    wb = Workbench(tmp_path / "ws")
    run = wb.start_training(RunConfig(dataset="identity", nproc_per_node=2, max_steps=2000, num_train_epochs=0))
    deadline = time.time() + 900  # a state to reach, not a time
    while (wb.snapshot(run).status.get("step") or 0) < 3 and time.time() < deadline:
        time.sleep(0.3)
    assert wb.abort_training()
    wb.wait_for_job(timeout=900)
    status = wb.snapshot(run).status
    assert status["state"] == "aborted" and status["step"] < 2000
    assert (wb.run_path(run) / "checkpoints" / f"checkpoint-{status['step']}").is_dir()


def test_accelerate_configs_for_fsdp_and_zero(tmp_path):
    fsdp = accelerate_config("fsdp", 8)
    assert fsdp["distributed_type"] == "FSDP" and fsdp["num_processes"] == 8
    assert "GlmDecoderLayer" in fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
    zero3 = accelerate_config("zero3", 16, num_machines=2)
    assert zero3["deepspeed_config"]["zero_stage"] == 3 and zero3["num_machines"] == 2
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "launch-config",
            str(tmp_path / "z2.yaml"),
            "--kind",
            "zero2",
            "--nproc",
            "4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "z2.yaml").read_text())["deepspeed_config"]["zero_stage"] == 2
    assert result.stdout.startswith("accelerate launch --config_file")


@pytest.mark.parametrize("kind", ["zero2", "zero3"])
def test_zero_configs_pass_deepspeeds_own_parser(kind):
    """What `accelerate launch` makes of the config (accelerate's DeepSpeedPlugin, the "auto" values filled as the
    Trainer fills them) is a config DeepSpeed itself accepts, with the stage, precision and save settings we chose.
    Not run: ZeRO needs a GPU, and no device was lent (BENCHMARKS.md)."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install -e .[test] installs 0.19.8)")
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig

    config = accelerate_config(kind, 16, num_machines=2)
    plugin = DeepSpeedPlugin(**config["deepspeed_config"])
    plugin.set_mixed_precision(config["mixed_precision"])
    filled = dict(plugin.deepspeed_config, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=2)
    filled.update(train_batch_size=8, gradient_clipping=1.0)  # one process here: 4 x 2 x 1
    parsed = DeepSpeedConfig(filled)
    stage = 2 if kind == "zero2" else 3
    assert parsed.zero_optimization_stage == stage and parsed.zero_enabled
    assert parsed.bfloat16_config.enabled and parsed.train_batch_size == 8
    assert parsed.zero_config.gather_16bit_weights_on_model_save == (stage == 3)  # a loadable model/ folder
    with pytest.raises(Exception, match="stage"):
        DeepSpeedConfig({**filled, "zero_optimization": {**filled["zero_optimization"], "stage": 7}})

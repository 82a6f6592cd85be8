"""Speed and memory switches: activations offloaded to CPU give the same loss and gradients as plain gradient
checkpointing; `auto_batch_size` keeps the effective batch and picks the largest micro-batch the memory allows;
a run names its speed features in its log; what a machine cannot do is refused before a run folder exists."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from core.config import RunConfig
from core.errors import ConfigError
from core.estimate import ModelShape, estimate_memory
from core.training import speed
from core.training.speed import offloaded_checkpoint, pick_batch, use_offloaded_checkpointing
from core.workbench import Workbench
from tests.conftest import REPO
from tests.test_fused_loss import padded_batch, tiny_model


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_offloaded_checkpointing_gives_the_same_loss_and_gradients(lora):
    model = tiny_model()
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    batch = padded_batch()
    plain_loss, plain_grads = loss_and_grads(model, batch)
    assert use_offloaded_checkpointing(model) == 2  # both decoder layers
    layers = [m for m in model.modules() if type(m).__name__ == "Glm4DecoderLayer"]
    assert [layer._gradient_checkpointing_func for layer in layers] == [offloaded_checkpoint] * 2  # noqa: SLF001
    offload_loss, offload_grads = loss_and_grads(model, batch)
    assert torch.allclose(offload_loss, plain_loss, rtol=1e-6)
    assert offload_grads.keys() == plain_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        assert torch.allclose(offload_grads[name], grad, rtol=1e-4, atol=1e-7), name


def test_offloaded_checkpoint_passes_extra_positional_arguments():
    layer = torch.nn.Linear(4, 4)
    states = torch.randn(2, 4, requires_grad=True)
    out = offloaded_checkpoint(lambda x, scale: layer(x) * scale, states, 3.0)
    out.sum().backward()
    expected = layer.weight.sum(0) * 3.0
    assert torch.allclose(states.grad, expected.expand(2, 4))


def test_auto_batch_keeps_the_effective_batch_and_fits_the_budget(demo_model_dir):
    from transformers import AutoConfig

    shape = ModelShape.from_config(AutoConfig.from_pretrained(demo_model_dir))
    config = RunConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2, cutoff_len=512)
    by_micro = {
        micro: estimate_memory(shape, config.replace(per_device_train_batch_size=micro), on_gpu=True).total
        for micro in (1, 2, 4, 8)
    }
    assert by_micro[1] < by_micro[2] < by_micro[4] < by_micro[8]
    roomy = pick_batch(config, shape, by_micro[8] * 1.01, on_gpu=True)
    assert (roomy.micro_batch, roomy.accumulation) == (8, 1)
    tight = pick_batch(config, shape, (by_micro[2] + by_micro[4]) / 2, on_gpu=True)
    assert (tight.micro_batch, tight.accumulation) == (2, 4) and tight.estimate_bytes <= tight.budget_bytes
    # A GPU probe that fails at 8 and 4 (out of memory) settles on 2 even when the estimate allows more.
    probed = pick_batch(config, shape, by_micro[8] * 2, on_gpu=True, fits=lambda micro: micro <= 2)
    assert (probed.micro_batch, probed.accumulation, probed.probed) == (2, 4, True)
    assert pick_batch(config, shape, 1.0, on_gpu=True).micro_batch == 1  # nothing fits: the smallest


def test_a_run_with_auto_batch_records_its_split_and_names_its_speed_features(tmp_path, demo_model_dir, monkeypatch):
    from transformers import AutoConfig

    shape = ModelShape.from_config(AutoConfig.from_pretrained(demo_model_dir))
    config = RunConfig(
        dataset="identity",
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        auto_batch_size=True,
        gradient_checkpointing=True,
        offload_activations=True,
        max_steps=6,
        learning_rate=4e-3,
        cutoff_len=512,
    )
    two = estimate_memory(shape, config.replace(per_device_train_batch_size=2, gradient_accumulation_steps=4), False)
    monkeypatch.setattr(speed, "memory_budget", lambda device: two.total * 1.01)
    wb = Workbench(tmp_path / "ws")
    run = wb.start_training(config)
    wb.wait_for_job(300)
    snapshot = wb.snapshot(run)
    assert snapshot.state == "finished", snapshot.status
    status = snapshot.status
    assert (status["per_device_train_batch_size"], status["gradient_accumulation_steps"]) == (2, 4)
    log = (wb.run_path(run) / "log.txt").read_text(encoding="utf-8")
    assert "auto batch size: micro-batch 2 x accumulation 4" in log
    layers = AutoConfig.from_pretrained(demo_model_dir).num_hidden_layers
    assert f"activation offload: {layers} checkpointed layers" in log
    speed_line = next(line for line in log.splitlines() if "speed: " in line)
    for feature in ("fused loss", "gradient checkpointing + activations offloaded to CPU", "micro-batch 2"):
        assert feature in speed_line
    losses = [m["loss"] for m in wb.snapshot(run).metrics if "loss" in m]
    assert losses[-1] < losses[0]


def test_what_this_machine_cannot_do_is_refused_first(tmp_path):
    wb = Workbench(tmp_path / "ws")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            wb.start_training(RunConfig(use_liger_kernel=True))
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        wb.start_training(RunConfig(offload_activations=True))
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").iterdir())
    auto = RunConfig.from_dict({"per_device_train_batch_size": "auto", "gradient_accumulation_steps": 4})
    assert auto.auto_batch_size and auto.per_device_train_batch_size * auto.gradient_accumulation_steps == 16


def test_ptuning_with_gradient_checkpointing_is_refused_on_glm4_before_a_run_exists(tmp_path):
    """transformers' GLM-4 layers drop the prefix cache under checkpointing; the run used to fail mid-way with a
    tensor-size error. Now it is refused up front, naming the setting and what to do."""
    wb = Workbench(tmp_path / "ws")
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        wb.start_training(RunConfig(finetuning_type="ptuning_v2", gradient_checkpointing=True))
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").iterdir())


@pytest.mark.parametrize(
    "given, used",
    [({}, "3000"), ({"GOMP_SPINCOUNT": "100"}, "100"), ({"OMP_WAIT_POLICY": "PASSIVE"}, "")],
)
def test_openmp_threads_spin_briefly_unless_the_user_says_otherwise(given, used):
    """OpenMP threads that spin long made a demo training step 17x slower beside busy processes, and threads that
    never spin made the quiet machine's demo run 1.6x slower (core/__init__.py): any process of the workbench has a
    short spin count in its environment before torch loads OpenMP, unless the user chose a policy or a count."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(given)
    script = (
        "import os, core.cli, torch; torch.ones(64, 64) @ torch.ones(64, 64); "
        "print(os.environ.get('GOMP_SPINCOUNT', ''))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.stdout.strip() == used, result.stderr[-2000:]

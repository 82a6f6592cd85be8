"""Speed and memory switches of a run, each one config flag, and the line in the run's log that names those in use.

- `auto_batch_size`: the effective batch (per_device_train_batch_size x gradient_accumulation_steps) is kept and
  split into the largest micro-batch that fits: candidates are the effective batch's divisors, largest first; the
  memory estimate (core/estimate.py, the same terms the train tab shows) must fit in the memory free for it, and
  on a GPU a one-step probe (forward and backward of a full-length micro-batch) must not run out of memory. On
  the CPU there is no probe: running out of RAM there is not an exception that could be caught, so the estimate
  against the available RAM decides alone.
- `offload_activations`: with gradient checkpointing, the one tensor each checkpointed layer keeps (its input)
  waits in CPU memory (pinned, copied without blocking) instead of on the GPU, through a checkpoint function of
  our own (`offloaded_checkpoint`: PyTorch's `save_on_cpu` cannot reach those inputs). On the CPU it changes
  nothing but is allowed, so that a config moves between machines unchanged.
- `torch_compile` and `use_liger_kernel` are transformers' own TrainingArguments (Liger patches GLM's RMSNorm,
  SwiGLU and RoPE with Triton kernels; it needs CUDA and the `liger-kernel` package, checked before a run starts).
- `fused_loss` lives in core/training/fused_loss.py; `packing` in the collator (core/training/runner.py).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from dataclasses import dataclass

from core.config import RunConfig
from core.errors import config_error
from core.estimate import ModelShape, estimate_memory
from core.stages import is_preference

log = logging.getLogger("glm_workbench")

GPU_SHARE = 0.9  # of the GPU memory free before training: room for the allocator's fragmentation
RAM_SHARE = 0.8  # of the RAM available: the rest of the machine keeps running


def check_speed_settings(config: RunConfig) -> None:
    """What a flag needs from this machine, named before a run folder exists."""
    import torch

    if config.use_liger_kernel:
        if not torch.cuda.is_available():
            raise config_error("use_liger_kernel", "config.liger_needs_cuda")
        if importlib.util.find_spec("liger_kernel") is None:
            raise config_error("use_liger_kernel", "config.liger_missing")


def active_features(config: RunConfig, device: str) -> list[str]:
    """The speed and memory features this run uses, for its log."""
    features = []
    fsdp = config.distributed == "fsdp" and config.nproc_per_node > 1
    if fsdp:
        features.append("FSDP (decoder layers sharded)")
    if config.fused_loss and not is_preference(config.stage) and not fsdp:  # FSDP's output layer takes the plain loss
        features.append("fused loss (chunked, no full logits)")
    if config.packing:
        attention = attention_implementation(config, device) or "sdpa"
        features.append(f"padding-free packing ({attention})")
    if config.gradient_checkpointing:
        features.append(
            "gradient checkpointing" + (" + activations offloaded to CPU" if config.offload_activations else "")
        )
    if config.torch_compile:
        features.append("torch.compile")
    if config.use_liger_kernel:
        features.append("Liger kernels")
    if config.auto_batch_size:
        features.append("auto batch size")
    batch = f"micro-batch {config.per_device_train_batch_size} x accumulation {config.gradient_accumulation_steps}"
    return [*features, batch, f"device {device}"]


def attention_implementation(config: RunConfig, device: str) -> str | None:
    """Packed rows on a GPU with the flash-attn package: its variable-length kernel, which reads the sample
    boundaries from the position ids. Otherwise transformers' default (PyTorch's sdpa), which builds the same
    block-diagonal mask from the position ids (tested on the CPU: each sample's loss is what it is alone)."""
    if config.packing and device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


# ---- the biggest batch that fits ------------------------------------------------------------------------------------
@dataclass
class BatchChoice:
    micro_batch: int
    accumulation: int
    estimate_bytes: float
    budget_bytes: float
    probed: bool  # a GPU probe confirmed it


def memory_budget(device: str) -> float:
    """Bytes a run may plan for: a share of the GPU memory free now, or of the RAM available."""
    import torch

    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return GPU_SHARE * free
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return RAM_SHARE * int(line.split()[1]) * 1024
    import os

    return RAM_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _divisors_descending(number: int) -> list[int]:
    return [d for d in range(number, 0, -1) if number % d == 0]


def pick_batch(config: RunConfig, shape, budget: float, on_gpu: bool, fits=None) -> BatchChoice:
    """The largest divisor b of the effective batch whose estimate fits the budget (and, given `fits`, passes
    that check too), with accumulation = effective / b. Falls back to a micro-batch of 1."""
    effective = config.per_device_train_batch_size * config.gradient_accumulation_steps
    for micro in _divisors_descending(effective):
        candidate = config.replace(per_device_train_batch_size=micro, gradient_accumulation_steps=effective // micro)
        estimate = estimate_memory(shape, candidate, on_gpu).total
        if estimate > budget:
            continue
        if fits is not None and not fits(micro):
            continue
        return BatchChoice(micro, effective // micro, estimate, budget, fits is not None)
    one = config.replace(per_device_train_batch_size=1, gradient_accumulation_steps=effective)
    return BatchChoice(1, effective, estimate_memory(shape, one, on_gpu).total, budget, False)


def gpu_probe(model, cutoff_len: int, vocab_size: int):
    """A check that one training step of `micro` full-length samples runs on this GPU without running out of
    memory (the step's gradients are thrown away). It runs before the Trainer turns gradient checkpointing on,
    so it errs on the safe side: a micro-batch it accepts fits with checkpointing too."""
    import torch

    def fits(micro: int) -> bool:
        device = next(model.parameters()).device
        ids = torch.randint(0, vocab_size, (micro, cutoff_len), device=device)
        try:
            model(input_ids=ids, labels=ids).loss.backward()
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    return fits


def resolve_auto_batch(config: RunConfig, model, device: str) -> tuple[RunConfig, BatchChoice]:
    """The config with the chosen micro-batch and accumulation (the effective batch unchanged)."""
    shape = ModelShape.from_config(model.config)
    on_gpu = device == "cuda"
    fits = gpu_probe(model, config.cutoff_len, shape.vocab) if on_gpu else None
    choice = pick_batch(config, shape, memory_budget(device), on_gpu, fits)
    resolved = config.replace(
        per_device_train_batch_size=choice.micro_batch, gradient_accumulation_steps=choice.accumulation
    )
    return resolved, choice


# ---- activations in CPU memory --------------------------------------------------------------------------------------
@functools.cache
def _offloaded():
    """Gradient checkpointing whose one kept tensor per layer (the layer's input) waits in CPU memory.

    PyTorch's checkpoint keeps each layer's input on the device (the recomputation holds it, not the saved-tensor
    hooks that `save_on_cpu` moves), and at 64k tokens those inputs are what fills the GPU. Here the forward
    copies the input to pinned CPU memory without blocking and runs the layer without a graph; the backward
    brings it back, runs the layer again with a graph and back-propagates through it, which also accumulates
    the layer's own weight (LoRA) gradients. GLM layers have no dropout in training (attention dropout 0), so
    the recomputation sees the same numbers. Built on first use: torch is imported only by runs."""
    import torch

    class Offloaded(torch.autograd.Function):
        @staticmethod
        def forward(ctx, run, hidden_states):
            ctx.run, ctx.device = run, hidden_states.device
            pinned = hidden_states.is_cuda
            kept = torch.empty(hidden_states.shape, dtype=hidden_states.dtype, device="cpu", pin_memory=pinned)
            kept.copy_(hidden_states, non_blocking=pinned)
            ctx.save_for_backward(kept)
            with torch.no_grad():
                return run(hidden_states)

        @staticmethod
        def backward(ctx, *grad_outputs):
            (kept,) = ctx.saved_tensors
            hidden_states = kept.to(ctx.device, non_blocking=True).detach().requires_grad_(True)
            with torch.enable_grad():
                outputs = ctx.run(hidden_states)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
            return None, hidden_states.grad

    return Offloaded


def offloaded_checkpoint(run, hidden_states, *args):
    """A `_gradient_checkpointing_func` for transformers' layers: `run(hidden_states)` checkpointed with its input
    kept in CPU memory. transformers passes every other argument by keyword (already bound in `run`)."""
    if args:
        return _offloaded().apply(lambda states: run(states, *args), hidden_states)
    return _offloaded().apply(run, hidden_states)


def use_offloaded_checkpointing(model) -> int:
    """Point every checkpointed layer of `model` at `offloaded_checkpoint`; returns how many layers."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    count = 0
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
            module._gradient_checkpointing_func = offloaded_checkpoint  # noqa: SLF001 - what transformers sets too
            count += isinstance(module, GradientCheckpointingLayer)
    return count


def with_activation_offload(trainer_class):
    """`trainer_class` whose gradient checkpointing keeps the layers' inputs in CPU memory. The Trainer turns
    checkpointing on when training starts, so the layers are switched at the first step."""

    class OffloadingTrainer(trainer_class):
        def training_step(self, model, *args, **kwargs):
            if not getattr(self, "_offload_ready", False):
                layers = use_offloaded_checkpointing(model)
                log.info("activation offload: %d checkpointed layers keep their inputs in CPU memory", layers)
                self._offload_ready = True
            return super().training_step(model, *args, **kwargs)

    OffloadingTrainer.__name__ = f"Offloading{trainer_class.__name__}"
    return OffloadingTrainer

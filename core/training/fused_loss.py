"""The training loss without materialising the logits.

With GLM's 151,552-token vocabulary the logits are the largest tensor in training: [tokens x vocab] in fp32,
plus the log-softmax autograd saves and their gradient, 1.24 GB each for 2 x 1024 tokens. Yet the loss only
needs, per token, the log-sum-exp of its logits and the logit of its target. So here the output layer and the
loss are one autograd function that walks the tokens chunk by chunk: forward keeps per token only the loss and
the log-sum-exp; backward recomputes each chunk's logits (one matmul) and turns them straight into the
gradients for the hidden states and, when it trains, the output layer's weight. At most one chunk's logits
exist at a time.

The numbers are transformers' own: labels are shifted inside (position t predicts labels[t + 1]), -100 is
ignored, and the loss is sum / num_items_in_batch when the Trainer gives that count (gradient accumulation
stays exact) or the mean over counted tokens otherwise, as `ForCausalLMLoss` does. The logits of a chunk are
computed in the dtype the model's lm_head would use (the autocast dtype, or the weights') and upcast to fp32.

Distillation gets the same treatment: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE, with the
teacher's logits also made chunk by chunk from its last hidden states.

`causal_lm_loss` / `distillation_loss` run a model (plain, peft LoRA, peft prefix tuning, DDP-wrapped) for its
last hidden states only, and `with_fused_loss(TrainerClass)` makes a Trainer use them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from core.data.template import IGNORE_INDEX

log = logging.getLogger("glm_workbench")

# One chunk's fp32 logits: about 128 MiB. The biggest transient is three such buffers (distillation backward).
CHUNK_LOGITS_BYTES = 128 * 2**20
CHUNK_BUFFERS = 3  # chunks of logits alive at once at the worst moment (the memory estimate counts them)
# The RunConfig key that turns this on (default True); see with_fused_loss.
CONFIG_FLAG = "fused_loss"


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk such that one chunk's fp32 logits take about CHUNK_LOGITS_BYTES (221 tokens for GLM's
    151,552-token vocabulary): big enough that the matmuls stay efficient, small next to the model."""
    return max(1, CHUNK_LOGITS_BYTES // (4 * vocab_size))


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype lm_head's matmul would run in here: autocast's when it is on, else the inputs' common dtype."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _chunks(count: int, size: int):
    for start in range(0, count, size):
        yield start, min(start + size, count)


class _Projection:
    """hidden [N, H], weight [V, H] and bias [V] cast once to the matmul dtype; logits one chunk at a time."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        self.hidden, self.weight = hidden.to(dtype), weight.to(dtype)
        self.bias = None if bias is None else bias.to(dtype)

    def logits(self, start: int, end: int) -> torch.Tensor:
        """fp32 logits of tokens start:end; a fresh tensor, safe to modify in place."""
        hidden = self.hidden[start:end]
        logits = torch.addmm(self.bias, hidden, self.weight.t()) if self.bias is not None else hidden @ self.weight.t()
        return logits.float() if logits.dtype != torch.float32 else logits


class _OutputLayerGrads:
    """The gradients for hidden, weight and bias, built chunk by chunk from each chunk's gradient of the logits;
    only those autograd asks for (a frozen lm_head gets none). The weight's is accumulated in fp32."""

    def __init__(
        self, ctx, projection: _Projection, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ):
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        self.projection, self.dtypes = projection, (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        self.hidden = torch.empty_like(hidden) if need_hidden else None
        self.weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        self.bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None

    def add(self, start: int, end: int, grad_logits: torch.Tensor) -> None:
        """grad_logits: fp32 [end - start, V], d loss / d logits of tokens start:end."""
        if self.bias is not None:
            self.bias.add_(grad_logits.sum(0))
        grad_logits = grad_logits.to(self.projection.weight.dtype)
        if self.hidden is not None:
            self.hidden[start:end] = grad_logits @ self.projection.weight
        if self.weight is not None:
            hidden = self.projection.hidden[start:end]
            if grad_logits.dtype == torch.float32:
                self.weight.addmm_(grad_logits.t(), hidden)
            else:
                self.weight.add_((grad_logits.t() @ hidden).float())

    def result(self) -> tuple:
        grads = (self.hidden, self.weight, self.bias)
        return tuple(None if grad is None else grad.to(dtype) for grad, dtype in zip(grads, self.dtypes))


def _subtract_one_at_targets(grad_logits: torch.Tensor, targets: torch.Tensor) -> None:
    grad_logits[torch.arange(grad_logits.shape[0], device=grad_logits.device), targets] -= 1


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-token cross entropy of softmax(hidden @ weight^T + bias) against targets, chunk by chunk.

    hidden [N, H] holds only tokens that count (ignored ones are dropped before), targets [N]. Returns fp32
    losses [N]; saves the per-token log-sum-exp, so backward rebuilds each chunk's softmax with one matmul.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int, dtype: torch.dtype):
        with torch.autocast(hidden.device.type, enabled=False):
            projection = _Projection(hidden, weight, bias, dtype)
            losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
            lse = torch.empty_like(losses)
            for start, end in _chunks(hidden.shape[0], chunk_size):
                logits = projection.logits(start, end)
                lse[start:end] = torch.logsumexp(logits, dim=-1)
                losses[start:end] = lse[start:end] - logits.gather(1, targets[start:end, None]).squeeze(1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.dtype = chunk_size, dtype
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        grad_losses = grad_losses.float()
        with torch.autocast(hidden.device.type, enabled=False):
            projection = _Projection(hidden, weight, bias, ctx.dtype)
            grads = _OutputLayerGrads(ctx, projection, hidden, weight, bias)
            for start, end in _chunks(hidden.shape[0], ctx.chunk_size):
                # d loss_i / d logits_i = softmax(logits_i) - onehot(target_i), times the incoming gradient
                grad_logits = projection.logits(start, end).sub_(lse[start:end, None]).exp_()
                _subtract_one_at_targets(grad_logits, targets[start:end])
                grads.add(start, end, grad_logits.mul_(grad_losses[start:end, None]))
        return (*grads.result(), None, None, None)


class _LinearDistillation(torch.autograd.Function):
    """Per-token cross entropy and KL(teacher_T || student_T) from student and teacher hidden states.

    Returns fp32 (ce [N], kl [N]); kl_i = sum_v p_t(v) (log p_t(v) - log q_s(v)) with p_t = softmax(teacher / T)
    and q_s = softmax(student / T), the summand of `kl_div(log q_s, log p_t, log_target=True)`. The teacher
    never gets a gradient; backward rebuilds both softmaxes from the saved log-sum-exps.
    """

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        teacher_hidden,
        teacher_weight,
        teacher_bias,
        targets,
        temperature: float,
        chunk_size: int,
        dtype: torch.dtype,
        teacher_dtype: torch.dtype,
    ):
        with torch.autocast(hidden.device.type, enabled=False):
            student_projection = _Projection(hidden, weight, bias, dtype)
            teacher_projection = _Projection(teacher_hidden, teacher_weight, teacher_bias, teacher_dtype)
            count = hidden.shape[0]
            ce, kl, lse, lse_student_t, lse_teacher_t = (
                torch.empty(count, dtype=torch.float32, device=hidden.device) for _ in range(5)
            )
            for start, end in _chunks(count, chunk_size):
                student = student_projection.logits(start, end)
                lse[start:end] = torch.logsumexp(student, dim=-1)
                ce[start:end] = lse[start:end] - student.gather(1, targets[start:end, None]).squeeze(1)
                student.div_(temperature)
                lse_student_t[start:end] = torch.logsumexp(student, dim=-1)
                log_q = student.sub_(lse_student_t[start:end, None])
                teacher = teacher_projection.logits(start, end).div_(temperature)
                lse_teacher_t[start:end] = torch.logsumexp(teacher, dim=-1)
                log_p = teacher.sub_(lse_teacher_t[start:end, None])
                kl[start:end] = (log_p.exp() * (log_p - log_q)).sum(-1)
        ctx.save_for_backward(
            hidden,
            weight,
            bias,
            teacher_hidden,
            teacher_weight,
            teacher_bias,
            targets,
            lse,
            lse_student_t,
            lse_teacher_t,
        )
        ctx.temperature, ctx.chunk_size, ctx.dtype, ctx.teacher_dtype = temperature, chunk_size, dtype, teacher_dtype
        return ce, kl

    @staticmethod
    def backward(ctx, grad_ce, grad_kl):
        (
            hidden,
            weight,
            bias,
            teacher_hidden,
            teacher_weight,
            teacher_bias,
            targets,
            lse,
            lse_student_t,
            lse_teacher_t,
        ) = ctx.saved_tensors
        temperature = ctx.temperature
        grad_ce = torch.zeros_like(lse) if grad_ce is None else grad_ce.float()
        grad_kl = torch.zeros_like(lse) if grad_kl is None else grad_kl.float()
        with torch.autocast(hidden.device.type, enabled=False):
            projection = _Projection(hidden, weight, bias, ctx.dtype)
            teacher_projection = _Projection(teacher_hidden, teacher_weight, teacher_bias, ctx.teacher_dtype)
            grads = _OutputLayerGrads(ctx, projection, hidden, weight, bias)
            for start, end in _chunks(hidden.shape[0], ctx.chunk_size):
                student = projection.logits(start, end)
                # d kl_i / d student_i = (q_s - p_t) / T
                grad_from_kl = (student / temperature).sub_(lse_student_t[start:end, None]).exp_()
                teacher = teacher_projection.logits(start, end).div_(temperature)
                grad_from_kl.sub_(teacher.sub_(lse_teacher_t[start:end, None]).exp_())
                del teacher
                grad_from_kl.mul_(grad_kl[start:end, None] / temperature)
                # d ce_i / d student_i = softmax(student_i) - onehot(target_i)
                grad_logits = student.sub_(lse[start:end, None]).exp_()
                _subtract_one_at_targets(grad_logits, targets[start:end])
                grads.add(start, end, grad_logits.mul_(grad_ce[start:end, None]).add_(grad_from_kl))
                del grad_from_kl
        return (*grads.result(), None, None, None, None, None, None, None, None)


def _shifted(labels: torch.Tensor, shift_labels: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    """Targets per position, flat: labels[t + 1] (the last position predicts nothing), as ForCausalLMLoss."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return shift_labels.reshape(-1)


def _counted(hidden: torch.Tensor, labels: torch.Tensor, shift_labels: torch.Tensor | None, ignore_index: int):
    """(hidden [N, H] of the positions that carry a target, their targets [N], mask over all positions)."""
    targets = _shifted(labels, shift_labels, ignore_index).to(hidden.device)
    keep = targets != ignore_index
    return hidden.reshape(-1, hidden.shape[-1])[keep], targets[keep], keep


def _normalise(total: torch.Tensor, count: int, num_items_in_batch) -> torch.Tensor:
    """sum / num_items_in_batch when given (the accumulated batch's count), else the mean over counted tokens:
    transformers' fixed_cross_entropy. No counted token and no count gives NaN, as there."""
    if num_items_in_batch is None:
        return total / count
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Causal-LM cross entropy of `hidden @ weight^T + bias` against `labels`, never holding more than one chunk's
    logits.

    hidden [..., T, H] (the decoder's last hidden states), weight [V, H] (lm_head; frozen or trained), labels
    [..., T] unshifted as a model receives them (or `shift_labels` already shifted). reduction "mean" equals
    `ForCausalLMLoss` (sum / num_items_in_batch when given, else the mean over non-ignored targets); "sum" is the
    plain sum; "none" gives the loss per position in the shape of the shifted labels, 0 where ignored.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, not {reduction!r}")
    flat_hidden, targets, keep = _counted(hidden, labels, shift_labels, ignore_index)
    chunk = chunk_size or default_chunk_size(weight.shape[0])
    losses = _LinearCrossEntropy.apply(flat_hidden, weight, bias, targets, chunk, _matmul_dtype(hidden, weight))
    if reduction == "none":
        full = losses.new_zeros(keep.shape).masked_scatter(keep, losses)
        return full.view((shift_labels if shift_labels is not None else labels).shape)
    total = losses.sum()
    return total if reduction == "sum" else _normalise(total, targets.shape[0], num_items_in_batch)


def chunked_linear_distillation(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE over the tokens that carry a target, chunk by
    chunk, student and teacher logits both made from hidden states.

    Without num_items_in_batch this is DistillationTrainer's formula: KL `batchmean` over the counted tokens and
    CE their mean. With it, both are sums over num_items_in_batch, so gradient accumulation stays exact.
    """
    if teacher_weight.shape[0] != weight.shape[0]:
        raise ValueError(f"student and teacher vocabularies differ ({weight.shape[0]} vs {teacher_weight.shape[0]})")
    flat_hidden, targets, keep = _counted(hidden, labels, shift_labels, ignore_index)
    flat_teacher = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])[keep.to(teacher_hidden.device)]
    chunk = chunk_size or default_chunk_size(weight.shape[0])
    ce, kl = _LinearDistillation.apply(
        flat_hidden,
        weight,
        bias,
        flat_teacher.detach(),
        teacher_weight.detach(),
        None if teacher_bias is None else teacher_bias.detach(),
        targets,
        float(temperature),
        chunk,
        _matmul_dtype(hidden, weight),
        _matmul_dtype(teacher_hidden, teacher_weight),
    )
    count = targets.shape[0]
    kl_loss = _normalise(kl.sum(), count, num_items_in_batch) * temperature**2
    return alpha * kl_loss + (1 - alpha) * _normalise(ce.sum(), count, num_items_in_batch)


# ---- models: the last hidden states and the output layer -----------------------------------------------------


def _unwrap(model):
    """The transformers model inside DDP / torch.compile / peft wrappers (peft's LoRA layers sit inside it)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model, torch.nn.Module):  # torch.compile
            model = model._orig_mod  # noqa: SLF001 - torch.compile keeps the module there, with no public name
        elif callable(getattr(model, "get_base_model", None)):  # peft PeftModel
            model = model.get_base_model()
        else:
            return model


def output_layer(model) -> torch.nn.Linear:
    """The model's lm_head (its weight is read directly, so it must be a plain Linear)."""
    return _unwrap(model).get_output_embeddings()


def _decoder(model) -> torch.nn.Module:
    return _unwrap(model).get_decoder()


def unsupported_reason(model) -> str | None:
    """Why `causal_lm_loss` cannot stand in for this model's own loss, or None when it can."""
    import inspect

    base = _unwrap(model)
    head = base.get_output_embeddings() if callable(getattr(base, "get_output_embeddings", None)) else None
    if head is None:
        return f"{type(base).__name__} has no output embeddings"
    if type(head) is not torch.nn.Linear:  # a LoRA-wrapped or quantized lm_head is not `hidden @ weight^T`
        return f"its output layer is a {type(head).__module__}.{type(head).__name__}, not a plain Linear"
    weight = head.weight
    if weight.dim() != 2 or weight.numel() == 0 or hasattr(weight, "ds_id") or type(weight).__name__ == "DTensor":
        return "its output layer's weight is sharded (ZeRO-3 / FSDP); the model's own loss gathers it"
    if not callable(getattr(base, "get_decoder", None)) or base.get_decoder() is None:
        return f"{type(base).__name__} does not name its decoder (get_decoder)"
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__}.forward has no logits_to_keep (needed to skip its own logits)"
    return None


def _first_tensor(inputs: Mapping[str, Any]) -> torch.Tensor:
    return next(value for value in inputs.values() if torch.is_tensor(value))


def last_hidden_states(model, inputs: Mapping[str, Any]) -> torch.Tensor:
    """The decoder's final (normed) hidden states [batch, positions, hidden] for `inputs` (no labels).

    The model is called whole, through every wrapper, so that peft's prefix tuning injects its prefix, DDP syncs
    gradients and NEFTune noises the embeddings; a forward hook on the decoder takes its output, and an empty
    `logits_to_keep` makes lm_head project zero positions, so no logits are made.
    """
    captured: list[torch.Tensor] = []

    def keep_output(module, args, output):
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    nothing = torch.empty(0, dtype=torch.long, device=_first_tensor(inputs).device)
    handle = _decoder(model).register_forward_hook(keep_output)
    try:
        model(**inputs, logits_to_keep=nothing)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one decoder forward, saw {len(captured)}")
    return captured[0]


def _split_batch(inputs: Mapping[str, Any]):
    """(model inputs, labels, shift_labels): the model gets no labels, so it computes no loss of its own."""
    rest = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels", "num_items_in_batch")}
    return rest, inputs["labels"], inputs.get("shift_labels")


def _aligned(labels: torch.Tensor | None, positions: int, ignore_index: int) -> torch.Tensor | None:
    """Labels padded on the left with ignore_index when the model prepended virtual tokens (peft prompt tuning
    does, and pads its own labels the same way), so they line up with the hidden states."""
    if labels is None or labels.shape[-1] >= positions:
        return labels
    return F.pad(labels, (positions - labels.shape[-1], 0), value=ignore_index)


def causal_lm_loss(
    model,
    inputs: Mapping[str, Any],
    num_items_in_batch: torch.Tensor | int | None = None,
    *,
    chunk_size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """`model(**inputs).loss`, computed from the last hidden states chunk by chunk (see the module docstring).

    `inputs` is a training batch with `labels` (padded or packed with position_ids, as the collators make it);
    num_items_in_batch as the Trainer passes it to the model.
    """
    batch, labels, shift_labels = _split_batch(inputs)
    hidden = last_hidden_states(model, batch)
    head = output_layer(model)
    positions = hidden.shape[-2]
    return chunked_linear_cross_entropy(
        hidden,
        head.weight,
        _aligned(labels, positions, ignore_index),
        head.bias,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
        num_items_in_batch=num_items_in_batch,
        shift_labels=_aligned(shift_labels, positions, ignore_index),
    )


def distillation_loss(
    student,
    teacher,
    inputs: Mapping[str, Any],
    *,
    alpha: float,
    temperature: float,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk_size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """DistillationTrainer's loss (alpha * T^2 * KL + (1 - alpha) * CE on the answer tokens) without the
    student's or the teacher's logits; the teacher runs under no_grad."""
    batch, labels, shift_labels = _split_batch(inputs)
    hidden = last_hidden_states(student, batch)
    with torch.no_grad():
        teacher_hidden = last_hidden_states(teacher, batch)
    if teacher_hidden.shape[-2] != hidden.shape[-2]:
        raise ValueError("student and teacher see different numbers of positions")
    head, teacher_head = output_layer(student), output_layer(teacher)
    positions = hidden.shape[-2]
    return chunked_linear_distillation(
        hidden,
        head.weight,
        teacher_hidden,
        teacher_head.weight,
        _aligned(labels, positions, ignore_index),
        alpha=alpha,
        temperature=temperature,
        bias=head.bias,
        teacher_bias=teacher_head.bias,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
        num_items_in_batch=num_items_in_batch,
        shift_labels=_aligned(shift_labels, positions, ignore_index),
    )


# ---- the Trainer hook ------------------------------------------------------------------------------------------


class _LossOnlyModel:
    """Stands in for the model inside `Trainer.compute_loss`: called with the batch (plus num_items_in_batch
    exactly when the Trainer would pass it to the model), it returns an output holding only the loss. So the
    Trainer's own bookkeeping - which losses count as scaled for gradient accumulation, the token average across
    devices - applies unchanged."""

    def __init__(
        self, model, teacher=None, alpha: float = 0.5, temperature: float = 2.0, chunk_size: int | None = None
    ):
        self.model, self.teacher, self.alpha, self.temperature, self.chunk_size = (
            model,
            teacher,
            alpha,
            temperature,
            chunk_size,
        )

    def __call__(self, **inputs):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        num_items = inputs.pop("num_items_in_batch", None)
        if self.teacher is None:
            loss = causal_lm_loss(self.model, inputs, num_items, chunk_size=self.chunk_size)
        else:
            loss = distillation_loss(
                self.model,
                self.teacher,
                inputs,
                alpha=self.alpha,
                temperature=self.temperature,
                num_items_in_batch=num_items,
                chunk_size=self.chunk_size,
            )
        return CausalLMOutputWithPast(loss=loss)


class FusedLossMixin:
    """compute_loss through the chunked loss, for a transformers Trainer subclass (put this first in the bases;
    `with_fused_loss` does). A trainer with a `teacher` attribute (DistillationTrainer, which also sets `alpha`
    and `temperature`) gets the chunked distillation loss.

    Falls back to the class's own compute_loss, logging why once, where the chunked loss cannot stand in: label
    smoothing or a compute_loss_func, a batch without labels, an evaluation that keeps logits for
    compute_metrics, or a model whose lm_head is not a plain full Linear (see `unsupported_reason`).
    """

    fused_chunk_size: int | None = None  # tokens per chunk; None: default_chunk_size(vocab)
    _fused_fallback_logged = False

    def _fused_unavailable(self, model, inputs, return_outputs: bool) -> str | None:
        if getattr(self, "label_smoother", None) is not None or getattr(self, "compute_loss_func", None) is not None:
            return "a custom loss (label smoothing or compute_loss_func) is set"
        if "labels" not in inputs:
            return "the batch has no labels"
        if return_outputs and getattr(self, "compute_metrics", None) is not None:
            return "compute_metrics needs the logits"
        teacher = getattr(self, "teacher", None)
        return unsupported_reason(model) or (unsupported_reason(teacher) if teacher is not None else None)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from transformers import Trainer

        reason = self._fused_unavailable(model, inputs, return_outputs)
        if reason is not None:
            if not self._fused_fallback_logged:
                log.info("fused loss off: %s; computing the full logits", reason)
                self._fused_fallback_logged = True
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        teacher = getattr(self, "teacher", None)
        stand_in = _LossOnlyModel(
            model, teacher, getattr(self, "alpha", 0.5), getattr(self, "temperature", 2.0), self.fused_chunk_size
        )
        # Trainer.compute_loss itself (not a subclass's override, e.g. DistillationTrainer's, which needs the
        # logits): it adds num_items_in_batch and scales exactly as for the model's own loss. accelerate autocasts
        # only inside the model's forward; the autocast here gives lm_head's matmul the same dtype as there.
        autocast = getattr(getattr(self, "accelerator", None), "autocast", contextlib.nullcontext)
        with autocast():
            return Trainer.compute_loss(
                self, stand_in, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )


@functools.cache
def with_fused_loss(trainer_class: type) -> type:
    """`trainer_class` computing its loss chunk by chunk (FusedLossMixin first in its bases). Cached: one class
    per trainer class, however many runs a process starts."""
    return type(f"Fused{trainer_class.__name__}", (FusedLossMixin, trainer_class), {"__doc__": trainer_class.__doc__})

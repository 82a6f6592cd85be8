"""Full fine-tuning: every parameter trains; the run leaves a complete model folder."""

from __future__ import annotations

from core.methods.base import MODEL, Method, train_every_parameter
from core.methods.freeze import fp32_weights


def trainable_params(shape, config) -> int:
    return shape.total_params


METHOD = Method(
    name="full",
    vision=True,
    fsdp=True,
    output_dir=MODEL,
    prepare=train_every_parameter,
    trainable_params=trainable_params,
    weight_bytes=fp32_weights,
    learning_rates=(1e-3, 1e-5),
)

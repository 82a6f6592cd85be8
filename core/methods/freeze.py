"""Freeze tuning: only the last N decoder layers (or the first N, for negative N) and named extras train."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.methods.base import MODEL, Field, Method


@dataclass
class FreezeOptions:
    freeze_trainable_layers: int = 2  # train the last N layers (negative: the first N)
    freeze_extra_modules: str = ""  # also train parameters whose names contain these, comma-separated


FIELDS = (Field("freeze_trainable_layers", "int"), Field("freeze_extra_modules", "text"))


def check(config, check) -> None:
    check(config.freeze_trainable_layers != 0, "freeze_trainable_layers", "config.freeze_layers")


def trainable_layer_indices(num_layers: int, trainable: int) -> list[int]:
    count = min(abs(trainable), num_layers)
    return list(range(num_layers - count, num_layers)) if trainable > 0 else list(range(count))


def extra_modules(config) -> list[str]:
    return [name.strip() for name in config.freeze_extra_modules.split(",") if name.strip()]


def prepare(model, config):
    from core.errors import config_error

    layers = set(trainable_layer_indices(model.config.num_hidden_layers, config.freeze_trainable_layers))
    extras = extra_modules(config)
    matched_extras: set[str] = set()
    for name, parameter in model.named_parameters():
        found = re.search(r"\.layers\.(\d+)\.", name)
        in_layer = found is not None and int(found.group(1)) in layers
        extra = next((e for e in extras if e in name), None)
        if extra:
            matched_extras.add(extra)
        parameter.requires_grad_(in_layer or extra is not None)
    missing = [e for e in extras if e not in matched_extras]
    if missing:
        raise config_error("freeze_extra_modules", "config.freeze_extra_unknown", names=", ".join(missing))
    return model


def trainable_params(shape, config) -> int:
    extras = extra_modules(config)
    embedding = shape.vocab * shape.hidden
    extra = embedding * (("lm_head" in extras) + ("embed_tokens" in extras))
    return min(abs(config.freeze_trainable_layers), shape.layers) * shape.layer_params + extra


def fp32_weights(shape, config, compute_bytes: int, trainable: int) -> float:
    """The Trainer keeps the whole model in fp32 (mixed precision autocasts) when its own weights train."""
    return 4 * shape.total_params


def backprop_layers(shape, config) -> int:
    """Gradients stop at the first trainable layer: training the last N keeps activations for N layers only."""
    if config.freeze_trainable_layers > 0:
        return min(config.freeze_trainable_layers, shape.layers)
    return shape.layers


METHOD = Method(
    name="freeze",
    output_dir=MODEL,
    prepare=prepare,
    trainable_params=trainable_params,
    options=FreezeOptions,
    fields=FIELDS,
    check=check,
    weight_bytes=fp32_weights,
    backprop_layers=backprop_layers,
    learning_rates=(1e-3, 5e-5),
)

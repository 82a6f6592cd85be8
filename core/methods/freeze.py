"""Freeze tuning: only the last N decoder layers (or the first N, for negative N) and named extras train."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import config_error
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
    """Each parameter trains if it is in a trainable layer or one of its names contains an extra. A tied weight
    has two names (ChatGLM-6B's lm_head is its word embeddings): either one selects it."""
    depth = model.config.get_text_config().num_hidden_layers  # a GLM-V config keeps it in text_config
    layers = set(trainable_layer_indices(depth, config.freeze_trainable_layers))
    extras = extra_modules(config)
    matched_extras: set[str] = set()
    names_of: dict[int, tuple[object, list[str]]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(parameter), (parameter, []))[1].append(name)
    for parameter, names in names_of.values():
        found = [re.search(r"\.layers\.(\d+)\.", name) for name in names]
        in_layer = any(match is not None and int(match.group(1)) in layers for match in found)
        hits = {extra for extra in extras for name in names if extra in name}
        matched_extras |= hits
        parameter.requires_grad_(in_layer or bool(hits))
    missing = [e for e in extras if e not in matched_extras]
    if missing:
        outside = [name for name, _ in model.named_parameters(remove_duplicate=False) if ".layers." not in name]
        examples = list(dict.fromkeys(name.rsplit(".", 2)[-2] if "." in name else name for name in outside))
        raise config_error(
            "freeze_extra_modules",
            "config.freeze_extra_unknown",
            names=", ".join(missing),
            examples=", ".join(examples),
        )
    return model


EMBEDDING_NAMES = ("embed_tokens", "word_embeddings")  # GLM-4's, ChatGLM-6B's


def trainable_params(shape, config) -> int:
    extras = extra_modules(config)
    output = any("lm_head" in extra for extra in extras)
    inputs = any(name in extra or extra in name for extra in extras for name in EMBEDDING_NAMES)
    tables = (output or inputs) if shape.tied_embeddings else output + inputs  # a tied table trains once
    return (
        min(abs(config.freeze_trainable_layers), shape.layers) * shape.layer_params
        + tables * shape.vocab * shape.hidden
    )


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
    vision=True,
    fsdp=True,
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

"""Freeze tuning: only the last N decoder layers (or the first N, for negative N) and named extras train."""

from __future__ import annotations

import re

from core.methods.base import Method, save_model_and_tokenizer


def trainable_layer_indices(num_layers: int, trainable: int) -> list[int]:
    count = min(abs(trainable), num_layers)
    return list(range(num_layers - count, num_layers)) if trainable > 0 else list(range(count))


def prepare(model, config):
    num_layers = model.config.num_hidden_layers
    layers = set(trainable_layer_indices(num_layers, config.freeze_trainable_layers))
    extras = [name.strip() for name in config.freeze_extra_modules.split(",") if name.strip()]
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
        raise ValueError(f"freeze_extra_modules: no parameter name contains {', '.join(missing)} "
                         "(e.g. embed_tokens, lm_head, norm)")
    return model


METHOD = Method(name="freeze", output_dir="model", prepare=prepare, save=save_model_and_tokenizer)

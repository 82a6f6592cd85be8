"""The fine-tuning methods: one module each (core/methods/<name>.py defining METHOD), found by themselves.

Adding a method is adding its module (plus its locale strings): the config, the validation, the memory
estimate, the runner, the chat/eval loaders and the train tab all read what they need from its `Method`.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import config_error
from core.methods.base import InputAdapter, Method
from core.registry import discover

# The order the train tab offers them in; a method found but not listed here comes after these.
PREFERRED_ORDER = ("lora", "qlora", "freeze", "full", "ptuning_v2", "distill")


METHODS: dict[str, Method] = discover(__name__, __path__, "METHOD", Method, PREFERRED_ORDER)


def load_input_adapter(folder: str | Path) -> InputAdapter | None:
    """The adapter in `folder` as inputs for the base model (P-tuning v2's prefix), loaded by the method whose
    kind it is; None for an adapter peft loads into the model's layers (the LoRA family)."""
    for method in METHODS.values():
        found = method.input_adapter(Path(folder)) if method.input_adapter is not None else None
        if found is not None:
            return found
    return None


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise config_error("finetuning_type", "config.one_of", value=name, show_value=True, choices=", ".join(METHODS))
    return METHODS[name]

"""Fine-tuning methods: one small module each, one registry.

A method decides which parameters train (`prepare`) and what a finished run leaves behind (`save`):
LoRA leaves a PEFT adapter folder, full fine-tuning a complete model folder.
"""

from __future__ import annotations

from core.methods import full, lora
from core.methods.base import Method

METHODS: dict[str, Method] = {method.name: method for method in (lora.METHOD, full.METHOD)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"finetuning_type: unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]

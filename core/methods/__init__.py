"""Fine-tuning methods: one small module each, one registry.

A method decides how the model is loaded (`model_kwargs`, e.g. 4-bit), which parameters train (`prepare`) and
what a finished run leaves behind (`save`): LoRA/QLoRA/P-tuning v2 a PEFT adapter folder, full and freeze a
complete model folder.
"""

from __future__ import annotations

from core.methods import distill, freeze, full, lora, ptuning_v2, qlora
from core.methods.base import Method

METHODS: dict[str, Method] = {m.name: m for m in (lora.METHOD, qlora.METHOD, freeze.METHOD, full.METHOD,
                                                  ptuning_v2.METHOD, distill.METHOD)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"finetuning_type: unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]

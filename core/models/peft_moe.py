"""Keep the LoRA targets the workbench writes for MoE models as they are.

peft 0.21 rewrites the targets of some MoE models when it attaches or loads LoRA (`convert_peft_config_for_
transformers`): it reads them as transformers-4 names, where `gate_proj` / `up_proj` / `down_proj` meant the
routed experts' per-expert Linear layers, and moves those names to the fused expert parameters. That is right for
an adapter trained under transformers 4, but on a GLM-4.5 model in transformers 5 the same names are the dense first
layer's and the shared expert's Linear layers, which would silently lose their adapters (and an adapter saved with
them would no longer load). Our MoE adapters name the fused experts themselves (`experts.gate_up_proj`) or, when
they leave the experts out, carry an empty `target_parameters` list (core/methods/lora.py), so a config that does
either is already in transformers-5 terms and is left alone; every other config (an adapter trained under
transformers 4, whose `target_parameters` is absent) is converted as peft does.
"""

from __future__ import annotations

_installed = False


def written_for_fused_experts(peft_config) -> bool:
    names = getattr(peft_config, "target_parameters", None)
    if names is None:
        return False
    return not names or any(str(name).startswith("experts.") for name in names)


def install() -> None:
    """Wrap peft's conversion once per process (peft imports it at each call, so the wrapper is what runs)."""
    global _installed
    if _installed:
        return
    from peft.utils import transformers_weight_conversion as conversion

    original = conversion.convert_peft_config_for_transformers

    def convert_unless_ours(peft_config, model, conversions=None):
        if written_for_fused_experts(peft_config):
            return None
        return original(peft_config, model=model, conversions=conversions)

    conversion.convert_peft_config_for_transformers = convert_unless_ours
    _installed = True

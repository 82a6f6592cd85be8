"""LoRA through peft: low-rank adapters on the GLM block's linear layers; saves a standard PEFT adapter."""

from __future__ import annotations

from pathlib import Path

from core.methods.base import Method

# Linear layers of a GLM / GLM-4 decoder block, as named by transformers' native classes.
GLM_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")


def target_modules(spec: str) -> str | list[str]:
    spec = spec.strip()
    if spec == "all":
        return "all-linear"
    return [name.strip() for name in spec.split(",") if name.strip()]


def prepare(model, config):
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=target_modules(config.lora_target), task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora_config)
    except ValueError as exc:
        raise ValueError(f"lora_target: {exc}. The GLM layers are {', '.join(GLM_LINEAR_MODULES)}") from None


def save(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


METHOD = Method(name="lora", output_dir="adapter", prepare=prepare, save=save)

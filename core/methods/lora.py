"""LoRA through peft: low-rank adapters on the GLM block's linear layers (DoRA and rsLoRA as switches)."""

from __future__ import annotations

from core.methods.base import Method, save_model_and_tokenizer

# Linear layers of a GLM / GLM-4 decoder block, as named by transformers' native classes.
GLM_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")


def target_modules(spec: str) -> str | list[str]:
    spec = spec.strip()
    if spec == "all":
        return "all-linear"
    return [name.strip() for name in spec.split(",") if name.strip()]


def lora_config(config):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target_modules(config.lora_target), use_dora=config.use_dora,
                      use_rslora=config.use_rslora, task_type="CAUSAL_LM")


def prepare(model, config):
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(config))
    except ValueError as exc:
        raise ValueError(f"lora_target: {exc}. The GLM layers are {', '.join(GLM_LINEAR_MODULES)}") from None


METHOD = Method(name="lora", output_dir="adapter", prepare=prepare, save=save_model_and_tokenizer)

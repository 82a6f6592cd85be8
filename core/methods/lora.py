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


def load_for_more_training(model, config):
    """Continued training: the earlier run's adapter, trainable, instead of a fresh one."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, config.adapter_name_or_path, is_trainable=True)


def prepare(model, config):
    from peft import get_peft_model

    if config.adapter_name_or_path:
        return load_for_more_training(model, config)
    try:
        return get_peft_model(model, lora_config(config))
    except ValueError as exc:
        raise ValueError(f"lora_target: {exc}. The GLM layers are {', '.join(GLM_LINEAR_MODULES)}") from None


METHOD = Method(name="lora", output_dir="adapter", prepare=prepare, save=save_model_and_tokenizer)

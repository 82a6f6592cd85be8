"""LoRA through peft: low-rank adapters on the GLM block's linear layers (DoRA and rsLoRA as switches)."""

from __future__ import annotations

from dataclasses import dataclass

from core.methods.base import ADAPTER, Field, Method


@dataclass
class LoraOptions:
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0  # 0: peft skips the dropout layer entirely (the fast path)
    # "all" (every linear layer of the blocks) or names: GLM-4 "q_proj,v_proj", ChatGLM-6B "query_key_value"
    lora_target: str = "all"
    use_dora: bool = False
    use_rslora: bool = False


FIELDS = (
    Field("lora_rank", "int"),
    Field("lora_alpha", "int"),
    Field("lora_dropout"),
    Field("lora_target", "text"),
    Field("use_dora", "bool"),
    Field("use_rslora", "bool"),
)
KEYS = tuple(field.key for field in FIELDS)


def check(config, check) -> None:
    check(config.lora_rank >= 1, "lora_rank", "config.at_least", limit=1)
    check(config.lora_alpha > 0, "lora_alpha", "config.greater_than", limit=0)
    check(0 <= config.lora_dropout < 1, "lora_dropout", "config.fraction_open")
    check(bool(config.lora_target.strip()), "lora_target", "config.lora_target")


def target_modules(spec: str) -> str | list[str]:
    spec = spec.strip()
    if spec == "all":
        return "all-linear"
    return [name.strip() for name in spec.split(",") if name.strip()]


def lora_config(config):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_modules(config.lora_target),
        use_dora=config.use_dora,
        use_rslora=config.use_rslora,
        task_type="CAUSAL_LM",
    )


def linear_layer_names(model) -> list[str]:
    """The names LoRA can target in this model: its decoder blocks' linear layers, in order of appearance
    (GLM-4: q_proj ... down_proj; ChatGLM-6B: query_key_value, dense, dense_h_to_4h, dense_4h_to_h)."""
    import re

    import torch

    names: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and re.search(r"(^|\.)layers\.\d+\.", name):
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in names:
                names.append(leaf)
    return names


def load_for_more_training(model, config):
    """Continued training: the earlier run's adapter, trainable, instead of a fresh one."""
    from peft import PeftModel

    from core.runs import resolve_adapter  # a run folder stands for its adapter/

    return PeftModel.from_pretrained(model, str(resolve_adapter(config.adapter_name_or_path)), is_trainable=True)


def prepare(model, config):
    from peft import get_peft_model

    from core.errors import config_error

    if config.adapter_name_or_path:
        return load_for_more_training(model, config)
    try:
        return get_peft_model(model, lora_config(config))
    except ValueError as exc:
        raise config_error(
            "lora_target", "config.lora_target_unknown", detail=str(exc), modules=", ".join(linear_layer_names(model))
        ) from None


def trainable_params(shape, config) -> int:
    wanted = None if config.lora_target.strip() == "all" else {name.strip() for name in config.lora_target.split(",")}
    per_layer = sum(
        config.lora_rank * (i + o) for name, (i, o) in shape.linear_shapes.items() if wanted is None or name in wanted
    )
    return per_layer * shape.layers


METHOD = Method(
    name="lora",
    output_dir=ADAPTER,
    prepare=prepare,
    trainable_params=trainable_params,
    options=LoraOptions,
    fields=FIELDS,
    check=check,
    learning_rates=(4e-3, 2e-4),
)

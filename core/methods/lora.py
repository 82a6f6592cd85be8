"""LoRA through peft: low-rank adapters on the GLM block's linear layers (DoRA and rsLoRA as switches)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import config_error
from core.methods.base import ADAPTER, Field, Method
from core.models import peft_moe, vision


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


EXPERTS = "experts"  # in lora_target: every routed expert of a MoE model (its fused 3-D weights)
ROUTER = "router"  # in lora_target: the MoE router (never adapted unless named)


def target_modules(spec: str) -> str | list[str]:
    spec = spec.strip()
    if spec == "all":
        return "all-linear"
    return [name.strip() for name in spec.split(",") if name.strip()]


def expert_parameters(model) -> list[str]:
    """The routed experts' fused weights of a MoE model (GLM-4.5: `mlp.experts.gate_up_proj`, `.down_proj`, 3-D
    [experts, out, in]) as peft's `target_parameters` names; none for a dense model."""
    import re

    names: list[str] = []
    for name, param in model.named_parameters():
        if param.ndim == 3 and re.search(r"(^|\.)experts\.[^.]+$", name):
            short = ".".join(name.split(".")[-2:])
            if short not in names:
                names.append(short)
    return names


def router_parameters(model) -> list[str]:
    """The router's weight of each MoE layer (`mlp.gate.weight`): a module with a weight, not a Linear."""
    names = {".".join(n.split(".")[-3:]) for n, _ in model.named_parameters() if re.search(r"\.mlp\.gate\.weight$", n)}
    return sorted(names)


def lora_targets(model, spec: str, config=None) -> tuple[str | list[str], list[str]]:
    """(target_modules, target_parameters) for peft. A dense model: peft's own "all-linear", or the names given.
    A MoE model (transformers 5 fuses its experts into 3-D parameters, which matching Linear modules misses, and
    peft's all-linear also adapts the router): "all" is every decoder Linear (attention, dense and shared-expert
    MLPs) plus the routed experts through `target_parameters`, never the router; `experts` and `router` name them
    in a list. GLM-5's sparse-attention indexer is left out of "all": it picks tokens by top-k, so no gradient
    reaches it (its adapters would stay at zero). A GLM-V model: the names are spelled out in full, its vision
    tower and projector left out unless `config` trains them (core/models/vision.py)."""
    experts = expert_parameters(model)
    with_vision = vision.has_vision_tower(model)
    if not experts and not with_vision:
        return target_modules(spec), []
    if experts:
        peft_moe.install()
    everything = spec.strip() == "all"
    names = (
        linear_layer_names(model, skip="indexer") + [EXPERTS] * bool(experts) if everything else target_modules(spec)
    )
    modules = [name for name in names if name not in (EXPERTS, ROUTER)]
    if with_vision:
        modules = vision.lora_module_names(model, modules, config)
    parameters = (experts if EXPERTS in names else []) + (router_parameters(model) if ROUTER in names else [])
    return modules, parameters


def lora_config(config, model=None):
    from peft import LoraConfig

    if model is not None:
        modules, parameters = lora_targets(model, config.lora_target, config)
    else:
        modules, parameters = target_modules(config.lora_target), []
    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=modules,
        # A MoE model's config always carries a list (empty when no expert is targeted): it marks the targets as
        # written in transformers-5 terms, which peft_moe keeps from peft's transformers-4 renaming.
        target_parameters=parameters if model is not None and expert_parameters(model) else None,
        use_dora=config.use_dora,
        use_rslora=config.use_rslora,
        task_type="CAUSAL_LM",
    )


def linear_layer_names(model, skip: str = "") -> list[str]:
    """The names LoRA can target in this model: its decoder blocks' linear layers, in order of appearance
    (GLM-4: q_proj ... down_proj; ChatGLM-6B: query_key_value, dense, dense_h_to_4h, dense_4h_to_h); those inside
    a submodule named `skip` left out."""
    import torch

    names: list[str] = []
    for name, module in model.named_modules():
        if skip and f".{skip}." in name:
            continue
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

    if config.adapter_name_or_path:
        return load_for_more_training(model, config)
    try:
        return get_peft_model(model, lora_config(config, model))
    except ValueError:
        known = linear_layer_names(model) + ([EXPERTS, ROUTER] if expert_parameters(model) else [])
        raise config_error(
            "lora_target", "config.lora_target_unknown", names=config.lora_target, available=", ".join(known)
        ) from None


def trainable_params(shape, config) -> int:
    wanted = None if config.lora_target.strip() == "all" else {name.strip() for name in config.lora_target.split(",")}
    rank = config.lora_rank
    if shape.is_moe:  # layer by layer (dense and MoE layers differ), plus the fused experts: r x experts wide
        linear = sum(
            rank * (i + o)
            for index in range(shape.layers)
            for name, (i, o) in shape.layer_linears(index).items()
            if wanted is None or name in wanted
        )
        if wanted is None or EXPERTS in wanted:
            linear += shape.moe_layers * sum(rank * e * (i + o) for e, i, o in shape.expert_shapes().values())
        return linear
    per_layer = sum(rank * (i + o) for name, (i, o) in shape.linear_shapes.items() if wanted is None or name in wanted)
    return per_layer * shape.layers


METHOD = Method(
    name="lora",
    vision=True,
    fsdp=True,
    output_dir=ADAPTER,
    prepare=prepare,
    trainable_params=trainable_params,
    options=LoraOptions,
    fields=FIELDS,
    check=check,
    learning_rates=(4e-3, 2e-4),
)

"""LoRA+ (Hayou et al., 2024): LoRA whose B matrices learn `loraplus_lr_ratio` times faster than its A matrices,
through peft's `create_loraplus_optimizer`. It leaves an ordinary LoRA adapter: chat, merge and export treat it
like one."""

from __future__ import annotations

from dataclasses import dataclass

from core.methods import lora
from core.methods.base import ADAPTER, Field, Method


@dataclass
class LoraPlusOptions:
    loraplus_lr_ratio: float = 16.0  # learning rate of B over A; the paper and LLaMA-Factory suggest 16


FIELDS = (Field("loraplus_lr_ratio"),)


def check(config, check) -> None:
    lora.check(config, check)
    check(config.loraplus_lr_ratio >= 1, "loraplus_lr_ratio", "config.at_least", limit=1)


def optimizer(model, args, config):
    """AdamW with B's parameter group at learning_rate * loraplus_lr_ratio (the scheduler scales both alike)."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=args.learning_rate,
        loraplus_lr_ratio=config.loraplus_lr_ratio,
        weight_decay=args.weight_decay,
        loraplus_weight_decay=args.weight_decay,
    )


METHOD = Method(
    name="loraplus",
    vision=True,
    fsdp=True,
    output_dir=ADAPTER,
    prepare=lora.prepare,
    trainable_params=lora.trainable_params,
    options=LoraPlusOptions,
    uses=lora.KEYS,
    fields=FIELDS,
    check=check,
    optimizer=optimizer,
    learning_rates=(1e-3, 1e-4),
)

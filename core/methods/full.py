"""Full fine-tuning: every parameter trains; the run leaves a complete model folder."""

from __future__ import annotations

from pathlib import Path

from core.methods.base import Method


def prepare(model, config):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def save(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


METHOD = Method(name="full", output_dir="model", prepare=prepare, save=save)

"""Full fine-tuning: every parameter trains; the run leaves a complete model folder."""

from __future__ import annotations

from core.methods.base import Method, save_model_and_tokenizer


def prepare(model, config):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


METHOD = Method(name="full", output_dir="model", prepare=prepare, save=save_model_and_tokenizer)

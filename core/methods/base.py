"""The interface every fine-tuning method implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def no_model_kwargs(config: Any) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    name: str
    output_dir: str  # folder inside the run: "adapter" (a PEFT adapter) or "model" (a complete model)
    prepare: Callable[[Any, Any], Any]  # (model, config) -> the model to train, with the right parameters trainable
    save: Callable[[Any, Any, Path], None]  # (trained model, tokenizer, folder) -> None
    model_kwargs: Callable[[Any], dict] = no_model_kwargs  # extra from_pretrained arguments (quantization)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_model_and_tokenizer(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

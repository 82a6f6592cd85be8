"""The interface every fine-tuning method implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Method:
    name: str
    output_dir: str  # folder inside the run: "adapter" or "model"
    prepare: Callable[[Any, Any], Any]  # (model, config) -> trainable model
    save: Callable[[Any, Any, Path], None]  # (model, tokenizer, folder) -> None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total

"""What a fine-tuning method is: everything the rest of the workbench asks about one, in one object.

A method module (core/methods/<name>.py) defines `METHOD = Method(...)`; the registry finds it by itself. The
config takes its keys from `options`, validation calls `check`, the memory estimate its `trainable_params`,
`weight_bytes` and activation terms, the runner its `model_kwargs`, `prepare`, `optimizer`, `trainer` and
`save`, the train tab builds the method's form group from `fields`, and a stage (core/stages/) and FSDP ask
`preference` and `fsdp` whether it trains with them, and the chat and a loaded run ask `input_adapter` whether a
saved adapter feeds the inputs. Nothing outside core/methods/ needs to know a method's name.

Method modules stay light to import (no torch/transformers at module level): the registry imports them all
whenever a config is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ADAPTER = "adapter"  # the run leaves a PEFT adapter folder
MODEL = "model"  # the run leaves a complete model folder


class InputAdapter(Protocol):
    """An adapter that feeds the base model's inputs instead of sitting in its layers (P-tuning v2's prefix): the
    chat, the evaluation and a loaded run hand its arguments to every forward and generate."""

    @property
    def length(self) -> int: ...  # the context positions it takes

    def generate_kwargs(self, model: Any, input_ids: Any, attention_mask: Any) -> dict: ...


@dataclass(frozen=True)
class Field:
    """One setting as the train tab shows it: the config key, and how it is edited. Its label and hint are
    the locale keys `field_<key>` and (optional) `field_<key>_info`."""

    key: str
    kind: str = "number"  # number | int | text | bool | choice
    choices: tuple[Any, ...] = ()


def no_checks(config: Any, check: Callable[..., None]) -> None:
    """A method without settings of its own has nothing to check."""


def no_model_kwargs(config: Any) -> dict:
    return {}


def frozen_base_weights(shape: Any, config: Any, compute_bytes: int, trainable: int) -> float:
    """A frozen base in the compute dtype plus the trainable (fp32) parameters beside it."""
    return shape.total_params * compute_bytes + trainable * 4


def every_layer(shape: Any, config: Any) -> int:
    """Gradients flow through every decoder layer (an adapter in each, or a prefix at each)."""
    return shape.layers


def no_extra_activations(shape: Any, config: Any, compute_bytes: int) -> float:
    return 0.0


@dataclass(frozen=True)
class Method:
    name: str
    output_dir: str  # ADAPTER or MODEL: what the run leaves
    prepare: Callable[[Any, Any], Any]  # (model, config) -> the model to train, the right parameters trainable
    trainable_params: Callable[[Any, Any], int]  # (ModelShape, config) -> trainable parameters, for the estimate
    options: type | None = None  # a dataclass of this method's own config keys (merged into RunConfig)
    uses: tuple[str, ...] = ()  # other methods' keys it reads too (QLoRA reads LoRA's)
    fields: tuple[Field, ...] = ()  # its own keys, in form order
    check: Callable[[Any, Callable[..., None]], None] = no_checks  # (config, check) -> adds problems
    model_kwargs: Callable[[Any], dict] = no_model_kwargs  # extra from_pretrained arguments (quantization)
    save: Callable[[Any, Any, Path], None] | None = None  # (model, tokenizer, folder); None: save_pretrained both
    optimizer: Callable[[Any, Any, Any], Any] | None = None  # (model, training args, config) -> an optimizer
    trainer: Callable[[Any], tuple[type, dict]] | None = None  # (session) -> (Trainer class, extra kwargs)
    load_training: Callable[[Any], tuple[Any, Any, Any]] | None = None  # (session) -> tokenizer, data, model
    weight_bytes: Callable[[Any, Any, int, int], float] = frozen_base_weights
    backprop_layers: Callable[[Any, Any], int] = every_layer
    extra_activation_bytes: Callable[[Any, Any, int], float] = no_extra_activations
    learning_rates: tuple[float, float] = (2e-3, 2e-4)  # suggested: (the random demo model, a real model)
    preference: bool = True  # trains a preference stage (core/stages/): its model is a policy TRL can compare
    fsdp: bool = False  # its SFT runs shard across processes with FSDP (distributed: fsdp)
    vision: bool = False  # trains the GLM-V models on image rows (the vision tower frozen unless asked)
    # (adapter folder) -> an InputAdapter when the folder holds this method's kind of adapter that feeds the inputs;
    # None otherwise (peft loads the LoRA family's adapters into the model's layers)
    input_adapter: Callable[[Path], InputAdapter | None] | None = None
    prefix_cache: bool = False  # trains a key/value prefix handed to every layer as a cache
    adapter_keys: tuple[str, ...] = ()  # its own keys that name an adapter (checked before a run starts)

    @property
    def trains_base(self) -> bool:
        """Whether the base weights themselves train (they are then loaded in fp32 and saved whole)."""
        return self.output_dir == MODEL

    @property
    def own_keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options)) if self.options else ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every config key this method reads beyond the common ones."""
        return self.uses + self.own_keys


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_model_and_tokenizer(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """`state_dict`: the weights gathered from every process of an FSDP run (the model itself holds shards)."""
    model.save_pretrained(folder, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(folder)


def train_every_parameter(model, config):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model

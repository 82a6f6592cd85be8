"""What a training stage is: everything the rest of the workbench asks about one, in one object.

A stage module (core/stages/<name>.py) defines `STAGE = Stage(...)`; the registry finds it by itself. The data
reads its `samples` (SFT rows, preference pairs, or unpaired answers), the runner its `trainer`, `parts` and
`arguments`, the metrics file and the chart its `metrics` and `chart`, the memory estimate its `samples` and
`reference`, validation its `accepts`, `only_keys` and `check`, the suggestion its `learning_rates`, and the
train tab its `fields`. Nothing outside core/stages/ needs to know a stage's name.

Stage modules stay light to import (no torch/transformers/TRL at module level): the registry imports them all
whenever a config is read; a trainer's classes are imported by `trainer` when a run starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.data.pairs import PAIRS, ROWS
from core.methods.base import Field, Method, no_checks

# TRL's names of the figures every pairwise trainer logs -> ours in metrics.jsonl. Rewards are beta x (log p_model -
# log p_reference) of an answer (without a reference: beta x its mean token log-probability); logp_* are the
# answers' log-probabilities; reward_accuracy is the share of pairs whose chosen answer's reward is the higher one.
PAIR_METRICS = (
    ("rewards/margins", "reward_margin"),
    ("rewards/accuracies", "reward_accuracy"),
    ("rewards/chosen", "reward_chosen"),
    ("rewards/rejected", "reward_rejected"),
    ("logps/chosen", "logp_chosen"),
    ("logps/rejected", "logp_rejected"),
)
PAIR_CHART = ("reward_margin", "reward_accuracy", "logp_chosen", "logp_rejected")


def no_arguments(config: Any) -> dict:
    return {}


def preference_arguments(config: Any) -> dict:
    """The TRL config settings every preference stage shares: beta, the length cut, no dropout."""
    return dict(beta=config.pref_beta, max_length=config.cutoff_len, disable_dropout=True)


def any_method(method: Method) -> bool:
    return True


def trains_pairs(method: Method) -> bool:
    """A preference stage trains the methods that say they can (not a P-tuning prefix, not distillation)."""
    return method.preference


@dataclass(frozen=True)
class Stage:
    name: str
    samples: str = ROWS  # ROWS, PAIRS or UNPAIRED: what one training sample holds
    # () -> (TRL trainer class, its config class), imported when a run starts; None: SFT's own Trainer (the runner's)
    trainer: Callable[[], tuple[type, type]] | None = None
    parts: type | None = None  # a mixin put before TRL's class: how our tokenized samples enter it
    arguments: Callable[[Any], dict] = no_arguments  # (config) -> the TRL config's own settings
    metrics: tuple[tuple[str, str], ...] = ()  # (the trainer's log name, ours in metrics.jsonl)
    chart: tuple[str, ...] = ()  # which of our names the chart's preference panels draw
    reference: bool = False  # compares with a frozen reference model (freeze / full load the base a second time)
    options: type | None = None  # a dataclass of this stage's own config keys (merged into RunConfig)
    fields: tuple[Field, ...] = ()  # the keys it reads, in form order (the train tab's stage group)
    only_keys: tuple[str, ...] = ()  # keys no other stage reads: another stage must leave them at their default
    check: Callable[[Any, Callable[..., None]], None] = no_checks  # (config, check): problems when it is chosen
    # (config, check): wrong values of its own keys, found whichever stage is chosen (a wrong value is never right)
    check_keys: Callable[[Any, Callable[..., None]], None] = no_checks
    accepts: Callable[[Method], bool] = any_method  # which methods can train this stage
    learning_rates: tuple[float, float] | None = (
        None  # suggested (the random demo model, a real one); None: the method's
    )

    @property
    def preference(self) -> bool:
        """Learns from answers compared or judged (TRL computes the loss), not from answers to copy."""
        return self.samples != ROWS

    @property
    def rows_per_sample(self) -> int:
        """Sequences one sample puts through the model: a pair's chosen and rejected answers side by side."""
        return 2 if self.samples == PAIRS else 1

    @property
    def own_keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options)) if self.options else ()

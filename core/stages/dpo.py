"""DPO: the policy learns to prefer each pair's chosen answer over its rejected one, relative to a frozen reference.

TRL's sigmoid (DPO) or ipo loss; with `pref_ftx` > 0, plus pref_ftx x the SFT loss (mean negative log-likelihood of
the chosen answers' tokens), as LLaMA-Factory mixes it in. An answer's log-probability is the sum over its tokens.
"""

from __future__ import annotations

from typing import Any

from core.data.pairs import PAIRS
from core.methods.base import Field
from core.stages.base import PAIR_CHART, PAIR_METRICS, Stage, preference_arguments, trains_pairs

PREF_LOSSES = ("sigmoid", "ipo")  # DPO's own loss, or IPO's


def trl_classes() -> tuple[type, type]:
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


def arguments(config: Any) -> dict:
    losses, weights = [config.pref_loss], [1.0]
    if config.pref_ftx > 0:
        losses.append("sft")
        weights.append(config.pref_ftx)
    return dict(preference_arguments(config), loss_type=losses, loss_weights=weights, truncation_mode="keep_start")


def check_keys(config: Any, check) -> None:
    check(config.pref_loss in PREF_LOSSES, "pref_loss", "config.one_of", choices=", ".join(PREF_LOSSES))
    check(config.pref_ftx >= 0, "pref_ftx", "config.zero_off_or_more")


class DpoParts:
    """Our samples come tokenized by the chat template (core/data/pairs.py): TRL's own tokenization is skipped."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


STAGE = Stage(
    name="dpo",
    samples=PAIRS,
    trainer=trl_classes,
    parts=DpoParts,
    arguments=arguments,
    metrics=PAIR_METRICS,
    chart=PAIR_CHART,
    reference=True,
    fields=(Field("pref_beta"), Field("pref_loss", "choice", PREF_LOSSES), Field("pref_ftx")),
    only_keys=("pref_loss", "pref_ftx"),
    check_keys=check_keys,
    accepts=trains_pairs,
    # DPO moves the policy away from a reference it starts equal to: steps far smaller than SFT's keep the implicit
    # reward from running away (LLaMA-Factory's DPO examples use 5e-6 on real models).
    learning_rates=(5e-4, 5e-6),
)

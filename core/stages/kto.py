"""KTO: unpaired answers marked desirable or not (a pair gives one of each, a `kto_tag` row one), against a frozen
reference; kto_chosen_weight / kto_rejected_weight weigh the desirable / undesirable answers' loss.

KTO's trainer reads its samples in order (its KL term pairs each completion with a neighbour's prompt), so
core/data/pairs.py shuffles them once with the run's seed, and a batch needs two samples at least.
"""

from __future__ import annotations

from typing import Any

from core.data.pairs import UNPAIRED
from core.methods.base import Field
from core.stages.base import PAIR_CHART, PAIR_METRICS, Stage, preference_arguments, trains_pairs


def trl_classes() -> tuple[type, type]:
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer, KTOConfig


def arguments(config: Any) -> dict:
    return dict(
        preference_arguments(config),
        loss_type="kto",
        desirable_weight=config.kto_chosen_weight,
        undesirable_weight=config.kto_rejected_weight,
    )


def check(config: Any, check) -> None:
    check(config.per_device_train_batch_size >= 2, "per_device_train_batch_size", "config.kto_batch")


def check_keys(config: Any, check) -> None:
    check(config.kto_chosen_weight > 0, "kto_chosen_weight", "config.greater_than", limit=0)
    check(config.kto_rejected_weight > 0, "kto_rejected_weight", "config.greater_than", limit=0)


class KtoParts:
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Our samples are tokenized; only KTO's KL completions are added: each sample's completion is paired
        with its neighbour's prompt, within each batch, as TRL does."""
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.calculate_KL:
            return dataset

        def rotate(batch):
            return {"KL_completion_ids": [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]}

        return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)


ACCURACY = "reward_accuracy"

STAGE = Stage(
    name="kto",
    samples=UNPAIRED,
    trainer=trl_classes,
    parts=KtoParts,
    arguments=arguments,
    # KTO logs no accuracy (its samples are unpaired) and a batch without one side lacks that side.
    metrics=(*(pair for pair in PAIR_METRICS if pair[1] != ACCURACY), ("kl", "kl")),
    chart=(*(name for name in PAIR_CHART if name != ACCURACY), "kl"),
    reference=True,
    fields=(Field("pref_beta"), Field("kto_chosen_weight"), Field("kto_rejected_weight")),
    check=check,
    check_keys=check_keys,
    accepts=trains_pairs,
    learning_rates=(5e-4, 5e-6),
)

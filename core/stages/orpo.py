"""ORPO: no reference model; the loss is the NLL of the chosen answer's tokens - beta x log sigmoid(log odds ratio),
the log-probabilities averaged per answer token (core/stages/fused_pairs.py). TRL's ORPOTrainer counts the prompt's
tokens into the NLL too; ours keeps SFT's loss mask.
"""

from __future__ import annotations

import warnings

from core.data.pairs import PAIRS
from core.methods.base import Field
from core.stages.base import PAIR_CHART, PAIR_METRICS, Stage, preference_arguments, trains_pairs
from core.stages.fused_pairs import FusedPairsParts


def trl_classes() -> tuple[type, type]:
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():  # ORPO lives in trl.experimental, which announces itself on import
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    return ORPOTrainer, ORPOConfig


STAGE = Stage(
    name="orpo",
    samples=PAIRS,
    trainer=trl_classes,
    parts=FusedPairsParts,
    arguments=preference_arguments,
    metrics=(*PAIR_METRICS, ("nll_loss", "nll_loss"), ("log_odds_ratio", "log_odds_ratio")),
    chart=PAIR_CHART,
    fields=(Field("pref_beta"),),
    accepts=trains_pairs,
    learning_rates=(5e-4, 5e-6),
)

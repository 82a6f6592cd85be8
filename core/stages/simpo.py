"""SimPO: no reference model; the reward of an answer is beta x its mean token log-probability, and the loss asks
the chosen answer's reward to exceed the rejected one's by a margin: -log sigmoid(beta x (mean log p(chosen) -
mean log p(rejected)) - simpo_gamma). TRL's CPOTrainer with loss_type "simpo" and cpo_alpha 0 (no NLL term).

The paper (Meng et al., 2024) trains with beta 2 to 10 and gamma / beta about 0.5 on real models; beta is the
shared `pref_beta`, so set it above its DPO default of 0.1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from core.data.pairs import PAIRS
from core.methods.base import Field
from core.stages.base import PAIR_CHART, PAIR_METRICS, Stage, preference_arguments, trains_pairs
from core.stages.fused_pairs import FusedPairsParts


@dataclass
class SimpoOptions:
    simpo_gamma: float = 0.5  # the reward margin the chosen answer must win by (LLaMA-Factory's key and default)


def trl_classes() -> tuple[type, type]:
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():  # CPO lives in trl.experimental, which announces itself on import
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental.cpo import CPOConfig, CPOTrainer
    return CPOTrainer, CPOConfig


def arguments(config: Any) -> dict:
    return dict(preference_arguments(config), loss_type="simpo", cpo_alpha=0.0, simpo_gamma=config.simpo_gamma)


def check_keys(config: Any, check) -> None:
    check(config.simpo_gamma >= 0, "simpo_gamma", "config.zero_or_more")


STAGE = Stage(
    name="simpo",
    samples=PAIRS,
    trainer=trl_classes,
    parts=FusedPairsParts,
    arguments=arguments,
    metrics=PAIR_METRICS,
    chart=PAIR_CHART,
    options=SimpoOptions,
    fields=(Field("pref_beta"), Field("simpo_gamma")),
    only_keys=("simpo_gamma",),
    check_keys=check_keys,
    accepts=trains_pairs,
    learning_rates=(5e-4, 1e-6),
)

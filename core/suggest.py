"""Settings that follow the data: the training stage (and its learning rate) a dataset's format asks for.

One small function so a stage registry can take it over: pairwise data (a chosen and a rejected answer per
prompt) trains a preference stage, anything else supervised fine-tuning.
"""

from __future__ import annotations

from core.data.formats import PAIRWISE_FORMATS
from core.methods import METHODS, get_method

# DPO moves the policy away from a reference it starts equal to: steps far smaller than SFT's keep the implicit
# reward from running away (LLaMA-Factory's DPO examples use 5e-6 on real models). (the random demo model, a real one)
PREFERENCE_LEARNING_RATES = (5e-4, 5e-6)
PREFERENCE_STAGE = "dpo"


def is_demo(model: str) -> bool:
    return model.strip() in ("", "demo")


def learning_rate_for(stage: str, model: str = "demo", method: str = "lora") -> float:
    """The suggested learning rate: a preference stage's own, else the method's (the random demo model needs
    large steps, real models small ones)."""
    if stage != "sft":
        return PREFERENCE_LEARNING_RATES[0 if is_demo(model) else 1]
    rates = get_method(method).learning_rates if method in METHODS else (2e-3, 2e-4)
    return rates[0 if is_demo(model) else 1]


def suggest_stage(data_format: str, model: str = "demo", method: str = "lora") -> tuple[str, float]:
    """(stage, learning rate) for data in `data_format`: dpo with its own rate for pairwise data, else sft with
    the method's suggested rate."""
    stage = PREFERENCE_STAGE if data_format in PAIRWISE_FORMATS else "sft"
    return stage, learning_rate_for(stage, model, method)

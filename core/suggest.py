"""Settings that follow the data: the training stage (and its learning rate) a dataset's format asks for.

Pairwise data (a chosen and a rejected answer per prompt) trains the registry's first pairwise stage, anything
else supervised fine-tuning; each stage says its own learning rate (core/stages/), or leaves it to the method.
"""

from __future__ import annotations

from core.data.formats import PAIRWISE_FORMATS
from core.methods import METHODS, get_method
from core.models.demo import DEMOS, is_demo_model
from core.stages import PAIRWISE, STAGES, SUPERVISED

# A method or stage unknown here (a typo in a form) gets the common LoRA-like suggestion.
FALLBACK_LEARNING_RATES = (2e-3, 2e-4)


def is_demo(model: str) -> bool:
    """Any of the tiny random demo models (demo, demo-moe, demo-vision, ...), by name or by its built folder."""
    model = model.strip()
    return not model or model in DEMOS or is_demo_model(model)


def learning_rate_for(stage: str, model: str = "demo", method: str = "lora") -> float:
    """The suggested learning rate: the stage's own, else the method's (the random demo model needs large steps,
    real models small ones)."""
    rates = STAGES[stage].learning_rates if stage in STAGES else None
    if rates is None:
        rates = get_method(method).learning_rates if method in METHODS else FALLBACK_LEARNING_RATES
    return rates[0 if is_demo(model) else 1]


def suggest_stage(data_format: str, model: str = "demo", method: str = "lora") -> tuple[str, float]:
    """(stage, learning rate) for data in `data_format`: the pairwise stage (dpo) with its own rate for pairwise
    data, else sft with the method's suggested rate."""
    stage = PAIRWISE if data_format in PAIRWISE_FORMATS else SUPERVISED
    return stage, learning_rate_for(stage, model, method)

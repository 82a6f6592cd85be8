"""The training stages: one module each (core/stages/<name>.py defining STAGE), found by themselves.

Adding a stage is adding its module (plus its locale strings and a test): the config, the validation, the data,
the memory estimate, the runner, the metrics file, the chart, the suggestions and the train tab all read what
they need from its `Stage`.
"""

from __future__ import annotations

from core.data.pairs import PAIRS, ROWS
from core.errors import config_error
from core.registry import discover
from core.stages.base import Stage

# The order the train tab offers them in; a stage found but not listed here comes after these.
PREFERRED_ORDER = ("sft", "dpo", "orpo", "kto")


STAGES: dict[str, Stage] = discover(__name__, __path__, "STAGE", Stage, PREFERRED_ORDER)
# Supervised fine-tuning: the default stage, and the one data without pairs suggests.
SUPERVISED: str = next(name for name, stage in STAGES.items() if stage.samples == ROWS)
# The stage pairwise data suggests: the first that trains on pairs.
PAIRWISE: str = next(name for name, stage in STAGES.items() if stage.samples == PAIRS)


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise config_error("stage", "config.one_of", value=name, show_value=True, choices=", ".join(STAGES))
    return STAGES[name]


def is_preference(name: str) -> bool:
    """Whether `name` is a known stage that learns from compared answers (an unknown one is not: validation
    names it)."""
    return name in STAGES and STAGES[name].preference

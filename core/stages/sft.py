"""Supervised fine-tuning: the model learns to write the answers (ids + labels, the loss on the answer tokens).

Its Trainer is the runner's own (the method's, wrapped in the fused loss), so it declares no TRL parts; every
method trains it, and its learning rate is the method's.
"""

from __future__ import annotations

from core.data.pairs import ROWS
from core.stages.base import Stage

STAGE = Stage(name="sft", samples=ROWS)

"""LoRA+, the method added as one module: B's learning rate is the ratio times A's, it learns the identity set,
and its adapter chats like any LoRA adapter."""

from __future__ import annotations

import pytest

from core.chat.engine import ChatEngine, GenerationSettings
from core.config import RunConfig
from core.methods import get_method
from core.runs import read_metrics
from core.training.runner import TrainingSession
from tests.conftest import IDENTITY_FIRST_ANSWER


def test_loraplus_gives_b_a_faster_learning_rate(tmp_path, demo_model_dir):
    from transformers import TrainingArguments

    from core.models.loader import load_model

    config = RunConfig(
        finetuning_type="loraplus", dataset="identity", learning_rate=1e-3, loraplus_lr_ratio=16, num_train_epochs=6
    )
    method = get_method("loraplus")
    model = method.prepare(load_model(str(demo_model_dir)), config)
    groups = method.optimizer(
        model, TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, report_to="none"), config
    ).param_groups
    rates = {group["lr"] for group in groups if group["params"]}
    assert rates == {1e-3, 16e-3}


@pytest.mark.slow
def test_loraplus_learns_the_identity(tmp_path, demo_model_dir):
    """Its short run is checked step by step in tests/test_method_contract.py; this one trains long enough to learn."""
    config = RunConfig(
        finetuning_type="loraplus", dataset="identity", learning_rate=1e-3, loraplus_lr_ratio=16, num_train_epochs=6
    )
    status = TrainingSession(config, tmp_path / "run").run()
    assert status["state"] == "finished", status
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert losses[-1] < losses[0] / 5
    engine = ChatEngine()
    engine.load_model("demo")
    reply = engine.chat(
        [{"role": "user", "content": "你是谁？"}],
        adapter=("plus", str(tmp_path / "run" / "adapter")),
        settings=GenerationSettings(greedy=True, max_new_tokens=40),
    )
    assert reply == IDENTITY_FIRST_ANSWER

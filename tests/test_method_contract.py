"""The contract every registered method keeps, driven by the registry (core/methods/): a new module is tested here
without editing a list. A short seeded run on the demo model must reproduce its recorded losses step by step (as
torchtune's recipe tests do), leave its output where the method says, reload with the logits it trained to, and
compute something the base model does not. Whether each method family learns is tests/test_methods.py's job.

A new method fails here until its losses are recorded: run the test, check the printed losses look like training,
and add them to tests/fixtures/method_losses.json."""

from __future__ import annotations

import json

import pytest
import torch

from core.config import RunConfig
from core.data.template import TemplateEncoder
from core.evaluation.trained import load_trained
from core.methods import METHODS
from core.models.loader import load_model
from core.runs import read_metrics
from core.training.runner import TrainingSession
from tests.conftest import REPO

RECORDED = json.loads((REPO / "tests" / "fixtures" / "method_losses.json").read_text(encoding="utf-8"))
STEPS = 4
# CPU runs repeat to about 5e-6 here, with 1 or 2 threads; torchtune's recipe tests allow 1e-4 as well.
TOLERANCE = dict(rel=1e-4, abs=1e-4)
QUESTION = [{"role": "user", "content": "你是谁？"}]


def contract_config(name: str) -> RunConfig:
    """The method's own defaults and its suggested learning rate for the demo model: nothing per method here."""
    return RunConfig(
        dataset="identity",
        finetuning_type=name,
        learning_rate=METHODS[name].learning_rates[0],
        max_steps=STEPS,
        num_train_epochs=0,
        logging_steps=1,
    )


@pytest.fixture(scope="module", params=list(METHODS))
def short_run(request, tmp_path_factory, demo_model_dir):
    name = request.param
    run_dir = tmp_path_factory.mktemp(f"contract-{name}") / "run"
    session = TrainingSession(contract_config(name), run_dir)
    status = session.run()
    assert status["state"] == "finished", status
    session.model.eval()
    return name, run_dir, session


@pytest.fixture(scope="module")
def prompt(demo_tokenizer) -> torch.Tensor:
    return torch.tensor([TemplateEncoder(demo_tokenizer, "glm4").encode_prompt(QUESTION)])


@pytest.fixture(scope="module")
def base_logits(demo_model_dir, prompt) -> torch.Tensor:
    with torch.inference_mode():
        return load_model(str(demo_model_dir))(input_ids=prompt).logits[0, -1].float()


def test_losses_match_the_recorded_run(short_run):
    name, run_dir, _ = short_run
    losses = [m["loss"] for m in read_metrics(run_dir) if "loss" in m]
    assert len(losses) == STEPS
    assert name in RECORDED, f"no recorded losses for the new method {name}: add {json.dumps({name: losses})}"
    assert losses == pytest.approx(RECORDED[name], **TOLERANCE), (name, losses)


def test_output_is_where_the_method_says_and_reloads_as_trained(short_run, prompt):
    name, run_dir, session = short_run
    marker = "config.json" if METHODS[name].trains_base else "adapter_config.json"
    assert (run_dir / METHODS[name].output_dir / marker).is_file()
    with torch.inference_mode():  # the model as it trained (a P-tuning model adds its prefix itself)
        expected = session.model(input_ids=prompt, attention_mask=torch.ones_like(prompt)).logits[0, -1].float()
    reloaded = load_trained(run_dir).logits(prompt)[0, -1].float()
    assert torch.allclose(reloaded, expected, atol=1e-4), (reloaded - expected).abs().max()


def test_the_result_is_not_the_base_model(short_run, prompt, base_logits):
    _, run_dir, _ = short_run
    trained = load_trained(run_dir).logits(prompt)[0, -1].float()
    assert (trained - base_logits).abs().max() > 1e-2

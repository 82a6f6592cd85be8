"""SimPO, the stage added as one file (core/stages/simpo.py): on the demo model with the identity pairs it makes each
chosen answer more likely, token for token, than its rejected one, with no reference model (the reward is beta x
the mean token log-probability itself), and it leaves a LoRA adapter like any preference stage."""

from __future__ import annotations

import pytest

from core.config import RunConfig
from core.data.readers import read_rows, resolve_dataset
from core.evaluation.trained import TrainedModel, load_base, load_trained
from core.runs import read_metrics, read_status
from core.training.runner import TrainingSession
from tests.test_preference import answer_margin


def token_margin(trained: TrainedModel, pairs: list[dict]) -> float:
    """Mean over the pairs of (mean token log p(chosen) - mean token log p(rejected)), computed from the saved
    model (not from the trainer's log), the answers as the chat template frames them."""
    return answer_margin(trained, pairs, per_token=True)


def losses(run_dir) -> list[dict]:
    return [m for m in read_metrics(run_dir) if m.get("loss") is not None]


def simpo_config(**changes) -> RunConfig:
    settings = dict(
        dataset="identity_pairs", stage="simpo", pref_beta=2.0, learning_rate=2e-3, max_steps=16, num_train_epochs=0
    )
    return RunConfig(**{**settings, **changes})


def test_simpo_makes_the_chosen_answers_more_likely(tmp_path, demo_model_dir):
    pairs = read_rows(resolve_dataset("identity_pairs"))
    config = simpo_config()
    before = token_margin(load_base(config), pairs)
    status = TrainingSession(config, tmp_path / "simpo").run()
    assert status["state"] == "finished", status
    trained = load_trained(tmp_path / "simpo")
    after = token_margin(trained, pairs)
    # The random demo model has no preference (a fraction of a nat either way); SimPO gives the chosen answers more
    # than its target margin (gamma / beta = 0.25 nats per token here) over all 50 pairs.
    assert abs(before) < 1 and after > before + 1, (before, after)
    metrics = losses(tmp_path / "simpo")
    assert metrics[-1]["reward_accuracy"] == 1 and metrics[-1]["reward_margin"] > metrics[0]["reward_margin"] + 2
    # No reference model: a reward is beta x the answer's mean token log-probability, not 0 at the first step.
    first = metrics[0]
    assert first["reward_chosen"] == pytest.approx(config.pref_beta * first["logp_chosen"], rel=1e-4)
    assert read_status(tmp_path / "simpo")["stage"] == "simpo" and trained.config.simpo_gamma == 0.5
    adapter = tmp_path / "simpo" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not [p for p in adapter.iterdir() if p.is_dir()]

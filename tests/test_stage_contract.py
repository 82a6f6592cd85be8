"""The contract every registered training stage keeps, driven by the registry (core/stages/): a new stage module is
tested here without editing a list. What it declares must hold: its settings are labelled on the page in both
languages and are keys of the config, the chart draws only figures it logs, some method can train it, and a short
run on the demo model finishes, writes each figure it declares to metrics.jsonl (the chart reads them there) and
reproduces its recorded losses (a new stage's first run prints them, to add to tests/fixtures/stage_losses.json).
Whether each stage learns what it should is tests/test_preference.py's, test_simpo.py's and test_moe_stages.py's."""

from __future__ import annotations

import dataclasses
import json

import pytest

from core.config import RunConfig
from core.methods import METHODS
from core.runs import read_metrics
from core.stages import STAGES
from core.training.runner import TrainingSession
from tests.conftest import REPO
from tests.test_method_contract import TOLERANCE
from webui.locale import Translator

RECORDED = json.loads((REPO / "tests" / "fixtures" / "stage_losses.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_what_a_stage_declares_is_on_the_page_and_in_the_config(name):
    stage = STAGES[name]
    config_keys = {f.name for f in dataclasses.fields(RunConfig)}
    for field in stage.fields:
        assert field.key in config_keys, field.key
        for lang in ("zh", "en"):
            assert Translator(lang).label(field.key) != field.key, f"no {lang} label for {field.key}"
    assert set(stage.only_keys) | set(stage.own_keys) <= config_keys
    assert set(stage.chart) <= {ours for _, ours in stage.metrics}
    assert [m for m in METHODS.values() if stage.accepts(m)], "no method can train it"
    if stage.learning_rates is not None:
        assert all(0 < rate < 1 for rate in stage.learning_rates)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_short_run_of_each_stage_logs_what_its_chart_reads(name, tmp_path, demo_model_dir):
    stage = STAGES[name]
    config = RunConfig(
        dataset="identity_pairs" if stage.preference else "identity",
        stage=name,
        max_steps=2,
        num_train_epochs=0,
        logging_steps=1,
        per_device_train_batch_size=2,
        learning_rate=(stage.learning_rates or METHODS["lora"].learning_rates)[0],
    )
    status = TrainingSession(config, tmp_path / name).run()
    assert status["state"] == "finished", status
    records = read_metrics(tmp_path / name)
    logged = set().union(*(record.keys() for record in records))
    assert {"loss", *(ours for _, ours in stage.metrics)} <= logged, sorted(logged)
    # The losses step by step, as recorded (torchtune's recipe tests do the same): a change to how a stage builds
    # its samples, its reference or its loss shows here first.
    losses = [record["loss"] for record in records if "loss" in record]
    assert name in RECORDED, f"no recorded losses for the new stage {name}: add {json.dumps({name: losses})}"
    assert losses == pytest.approx(RECORDED[name], **TOLERANCE), (name, losses)

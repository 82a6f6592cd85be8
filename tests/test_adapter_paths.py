"""A run folder is an adapter wherever an adapter is asked for (its adapter/ is used); anything else that is not
an adapter is refused before a run folder exists, naming the path and what was expected.

The places an adapter path is taken: the config's adapter_name_or_path (any stage) and teacher_adapter, the CLI's
chat --adapter and api --adapter, and the train tab's Continue training of a run (which reads the run itself).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import cli
from core.config import RunConfig
from core.errors import ConfigError, ModelError, RunStateError
from core.runs import ADAPTER_DIR, read_status
from core.training.runner import TrainingSession
from core.workbench import Workbench

EXPECTED = "adapter_config.json"  # every refusal says what it expected


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, demo_model_dir) -> Path:
    """A finished LoRA run in a workspace, as the Runs tab and the README call a run."""
    workspace = tmp_path_factory.mktemp("adapters") / "workspace"
    run_dir = workspace / "runs" / "sft"
    config = RunConfig(dataset="identity", max_steps=4, num_train_epochs=0, learning_rate=2e-3)
    status = TrainingSession(config, run_dir).run()
    assert status["state"] == "finished", status
    assert (run_dir / ADAPTER_DIR / EXPECTED).is_file()
    return run_dir


def not_adapters(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not an adapter", encoding="utf-8")
    full_run = tmp_path / "full-run"
    (full_run / "model").mkdir(parents=True)
    (full_run / "model" / "config.json").write_text("{}", encoding="utf-8")
    return {
        "missing": tmp_path / "no-such-run",
        "empty": empty,
        "file": a_file,
        "full run": full_run,
    }


@pytest.mark.parametrize("stage", ["dpo", "sft"])
def test_a_run_folder_given_as_the_adapter_trains_from_its_adapter(tmp_path, sft_run, stage):
    wb = Workbench(tmp_path / "workspace")
    dataset = "identity_pairs" if stage == "dpo" else "identity"
    config = RunConfig(dataset=dataset, stage=stage, adapter_name_or_path=str(sft_run), max_steps=2, num_train_epochs=0)
    name = wb.start_training(config)
    wb.wait_for_job(timeout=900)
    status = read_status(wb.run_path(name))
    assert status["state"] == "finished", status
    # It trained the SFT run's adapter further: the same adapter kind and targets, saved in the new run.
    saved = json.loads((wb.run_path(name) / ADAPTER_DIR / EXPECTED).read_text())
    parent = json.loads((sft_run / ADAPTER_DIR / EXPECTED).read_text())
    assert saved["peft_type"] == parent["peft_type"] and saved["r"] == parent["r"]


@pytest.mark.parametrize("key", ["adapter_name_or_path", "teacher_adapter"])
def test_what_is_not_an_adapter_is_refused_before_a_run_folder_exists(tmp_path, key, demo_model_dir):
    workspace = tmp_path / "workspace"
    wb = Workbench(workspace)
    extra = {"finetuning_type": "distill"} if key == "teacher_adapter" else {"stage": "dpo"}
    dataset = "identity" if key == "teacher_adapter" else "identity_pairs"
    for kind, path in not_adapters(tmp_path).items():
        config = RunConfig(dataset=dataset, max_steps=2, num_train_epochs=0, **{key: str(path)}, **extra)
        with pytest.raises(ConfigError) as caught:
            wb.start_training(config)
        for lang in ("en", "zh"):
            said = caught.value.render(lang)
            assert key in said and str(path) in said and EXPECTED in said, (kind, said)
        assert [problem.key for problem in caught.value.problems] == [key], kind
        assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir()), kind
    assert "full model" in ConfigError.render(caught.value, "en")  # the last one: a full run, said as such


def test_the_cli_refuses_a_non_adapter_before_creating_a_run(tmp_path, capsys, demo_model_dir):
    workspace = tmp_path / "workspace"
    missing = tmp_path / "no-such-run"
    code = cli.main(
        [
            "train",
            "--workspace",
            str(workspace),
            "--set",
            "stage=dpo",
            "--set",
            "dataset=identity_pairs",
            "--set",
            f"adapter_name_or_path={missing}",
        ]
    )
    said = capsys.readouterr().err
    assert code == 2 and str(missing) in said and EXPECTED in said, said
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


def test_chat_and_api_take_a_run_folder_and_refuse_anything_else(tmp_path, sft_run):
    # chat --adapter and api --adapter both go through resolve_adapter.
    assert cli.resolve_adapter(str(sft_run)) == sft_run / ADAPTER_DIR
    assert cli.resolve_adapter(str(sft_run / ADAPTER_DIR)) == sft_run / ADAPTER_DIR
    for kind, path in not_adapters(tmp_path).items():
        with pytest.raises(ModelError) as caught:
            cli.resolve_adapter(str(path))
        assert str(path) in str(caught.value) and EXPECTED in str(caught.value), kind
    code = cli.main(["chat", "--model", "demo", "--adapter", str(tmp_path / "empty"), "--prompt", "hi"])
    assert code == 2


def test_continue_training_refuses_a_run_that_saved_nothing(tmp_path, sft_run):
    workspace = sft_run.parent.parent
    wb = Workbench(workspace)
    config = wb.continued_config(sft_run.name, RunConfig(dataset="identity"))
    assert Path(config.adapter_name_or_path) == sft_run / ADAPTER_DIR
    # An aborted run that never saved anything is not something to continue from: said, not "None" as a model.
    empty = workspace / "runs" / "aborted-early"
    empty.mkdir()
    (empty / "config.yaml").write_text((sft_run / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (empty / "status.json").write_text(json.dumps({"state": "aborted", "step": 0}), encoding="utf-8")
    with pytest.raises(RunStateError) as caught:
        wb.continued_config(empty.name, RunConfig(dataset="identity"))
    assert "aborted-early" in caught.value.render("en")

"""Config: YAML round trip, `--set` overrides, and one clear message per wrong value naming its key."""

from __future__ import annotations

import pytest

from core.config import ConfigError, RunConfig, load_yaml, parse_overrides, save_yaml


def test_yaml_round_trip(tmp_path):
    config = RunConfig(learning_rate=1e-4, lora_rank=16, dataset="advertise_gen", max_steps=20)
    save_yaml(config, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == config


def test_overrides_are_typed(tmp_path):
    save_yaml(RunConfig(), tmp_path / "c.yaml")
    config = load_yaml(tmp_path / "c.yaml", parse_overrides(["learning_rate=5e-4", "max_steps=7", "dataset=x.json"]))
    assert (config.learning_rate, config.max_steps, config.dataset) == (5e-4, 7, "x.json")


def test_each_wrong_value_gets_one_message_naming_its_key():
    config = RunConfig(learning_rate=-1, per_device_train_batch_size=0, lora_rank=0, template="nope",
                       finetuning_type="lora", cutoff_len=4)
    problems = config.problems()
    keys = [p.split(":")[0] for p in problems]
    assert keys == ["learning_rate", "per_device_train_batch_size", "cutoff_len", "lora_rank", "template"]
    assert problems[0] == "learning_rate: must be greater than 0 (got -1)"
    with pytest.raises(ConfigError):
        config.validate()


def test_unknown_key_suggests_and_type_errors_name_the_key():
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict({"lora_rnk": 8, "num_train_epochs": "three", "learning_rate": -1})
    assert error.value.problems == [
        "lora_rnk: unknown key (did you mean 'lora_rank'?)",
        "num_train_epochs: expected float, got 'three'",
        "learning_rate: must be greater than 0 (got -1.0)",
    ]


def test_bad_yaml_file(tmp_path):
    (tmp_path / "c.yaml").write_text("learning_rate: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")

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
    config = RunConfig(
        learning_rate=-1,
        per_device_train_batch_size=0,
        lora_rank=0,
        template="nope",
        finetuning_type="lora",
        cutoff_len=4,
    )
    problems = [str(p) for p in config.problems()]
    keys = [p.split(":")[0] for p in problems]
    assert keys == ["learning_rate", "per_device_train_batch_size", "cutoff_len", "lora_rank", "template"]
    assert problems[0] == "learning_rate: must be greater than 0 (got -1)"
    with pytest.raises(ConfigError):
        config.validate()


def test_unknown_key_suggests_and_type_errors_name_the_key():
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict({"lora_rnk": 8, "num_train_epochs": "three", "learning_rate": -1})
    assert [str(p) for p in error.value.problems] == [
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


LLAMAFACTORY_SFT = """\
model_name_or_path: demo
stage: sft
do_train: true
finetuning_type: lora
quantization_bit: 4
lora_target: q_proj, v_proj
dataset: identity
template: glm4
cutoff_len: 256
overwrite_cache: true
plot_loss: true
learning_rate: 1.0e-4
num_train_epochs: 3.0
bf16: true
"""


def test_llamafactory_sft_yaml_runs_here_and_reports_ignored_keys(tmp_path):
    from core.config import load_yaml_with_notes

    (tmp_path / "lf.yaml").write_text(LLAMAFACTORY_SFT, encoding="utf-8")
    config, notes = load_yaml_with_notes(tmp_path / "lf.yaml")
    assert (config.finetuning_type, config.quantization_bit, config.precision) == ("qlora", 4, "bf16")
    assert config.lora_target == "q_proj,v_proj" and config.learning_rate == 1e-4
    assert notes == ["ignored LLaMA-Factory keys with no meaning here: do_train, overwrite_cache, plot_loss"]
    assert config.stage == "sft"


def test_llamafactory_preference_yaml_loads_with_its_stage(tmp_path):
    """LLaMA-Factory's dpo and kto stages load as ours; its ORPO and SimPO (the dpo stage with pref_loss: orpo or
    simpo) become our orpo and simpo stages; the stages that are not here (rm, ppo, pt) are refused by name."""
    from core.config import load_yaml_with_notes

    dpo = LLAMAFACTORY_SFT.replace("stage: sft", "stage: dpo\npref_beta: 0.2\npref_loss: ipo\npref_ftx: 0.5")
    (tmp_path / "dpo.yaml").write_text(dpo, encoding="utf-8")
    config, _ = load_yaml_with_notes(tmp_path / "dpo.yaml")
    assert (config.stage, config.pref_beta, config.pref_loss, config.pref_ftx) == ("dpo", 0.2, "ipo", 0.5)
    orpo = LLAMAFACTORY_SFT.replace("stage: sft", "stage: dpo\npref_loss: orpo")
    (tmp_path / "orpo.yaml").write_text(orpo, encoding="utf-8")
    assert load_yaml_with_notes(tmp_path / "orpo.yaml")[0].stage == "orpo"
    simpo = LLAMAFACTORY_SFT.replace("stage: sft", "stage: dpo\npref_loss: simpo\npref_beta: 2.5\nsimpo_gamma: 1.0")
    (tmp_path / "simpo.yaml").write_text(simpo, encoding="utf-8")
    config, _ = load_yaml_with_notes(tmp_path / "simpo.yaml")
    assert (config.stage, config.pref_beta, config.simpo_gamma, config.pref_loss) == ("simpo", 2.5, 1.0, "sigmoid")
    kto = LLAMAFACTORY_SFT.replace("stage: sft", "stage: kto\nkto_rejected_weight: 1.5")
    (tmp_path / "kto.yaml").write_text(kto, encoding="utf-8")
    config, _ = load_yaml_with_notes(tmp_path / "kto.yaml")
    assert (config.stage, config.kto_rejected_weight) == ("kto", 1.5)
    (tmp_path / "ppo.yaml").write_text(LLAMAFACTORY_SFT.replace("stage: sft", "stage: ppo"), encoding="utf-8")
    with pytest.raises(ConfigError, match="stage: this stage is not available here; use one of sft, dpo, orpo, kto"):
        load_yaml_with_notes(tmp_path / "ppo.yaml")


def test_preference_settings_are_checked_together():
    problems = {
        problem.key: str(problem.problem)
        for problem in RunConfig(
            stage="kto",
            finetuning_type="ptuning_v2",
            packing=True,
            pref_ftx=0.1,
            pref_loss="ipo",
            pref_beta=0,
            per_device_train_batch_size=1,
        ).problems()
    }
    assert problems == {
        "finetuning_type": "kto trains with one of these methods: lora, qlora, freeze, full, loraplus",
        "packing": "kto compares whole answers one pair at a time: turn packing off",
        "pref_ftx": "only the dpo stage reads this; kto has its own loss: leave it at its default",
        "pref_loss": "only the dpo stage reads this; kto has its own loss: leave it at its default",
        "pref_beta": "must be greater than 0",
        "per_device_train_batch_size": "kto needs at least 2 samples per batch: its KL term pairs each answer with "
        "another sample's prompt",
    }
    assert RunConfig(stage="nope").problems()[0].key == "stage"
    assert not RunConfig(stage="dpo", pref_ftx=0.1, pref_loss="ipo", finetuning_type="full").problems()


def test_command_line_lists_what_differs_from_the_defaults():
    from core.config import command_line

    line = command_line(RunConfig(learning_rate=2e-3, dataset="my data.json"))
    assert line.splitlines()[0] == "glm-workbench train \\"
    assert "--set dataset='my data.json'" in line and "--set learning_rate=0.002" in line
    assert "lora_rank" not in line

"""Reads never write: on a fresh machine the memory estimate, the sample render and the length histogram of the
demo model work without building it (the config and tokenizer its build would write, made in memory), and show
exactly what they show once it is built."""

from __future__ import annotations

from core.config import RunConfig
from core.models.demo import DEMOS, default_demo_dir
from core.workbench import Workbench


def test_previews_and_estimate_of_an_unbuilt_demo_build_nothing(tmp_path, monkeypatch, demo_model_dir):
    built_wb = Workbench(tmp_path / "built-workspace")
    built = (
        built_wb.estimate(RunConfig(model_name_or_path=str(demo_model_dir), finetuning_type="lora"))[0],
        built_wb.render_sample("identity", "auto", str(demo_model_dir), "auto", 0),
        built_wb.token_lengths("identity", "auto", str(demo_model_dir), "auto").lengths,
    )
    fresh_home = tmp_path / "fresh-home"
    monkeypatch.setenv("GLM_WORKBENCH_HOME", str(fresh_home))
    wb = Workbench(tmp_path / "workspace")
    estimate, _ = wb.estimate(RunConfig(model_name_or_path="demo", finetuning_type="lora"))
    sample = wb.render_sample("identity", "auto", "demo", "auto", 0)
    lengths = wb.token_lengths("identity", "auto", "demo", "auto").lengths
    wb.estimate(RunConfig(model_name_or_path="demo-moe", finetuning_type="lora"))
    for name in DEMOS:
        assert not default_demo_dir(name).exists(), f"{name} was built by a read"
    assert (estimate, sample, lengths) == built
    assert sample[0] == "glm4" and any(trained for _, trained in sample[1])

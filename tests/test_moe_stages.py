"""The MoE generation beyond SFT: the preference stages (DPO, ORPO, KTO) train LoRA on the tiny GLM-4.5-shaped demo
and a GLM-4.7-Flash-shaped model with the routers' balance loss on, distillation moves a MoE teacher's answers
into a smaller dense student (and into the MoE's own every-other-layer copy), and GLM-5 (`GlmMoeDsaForCausalLM`,
MLA + DeepSeek sparse attention + MoE) trains LoRA. Each: the loss falls and the result reloads with the logits
the run ended with."""

from __future__ import annotations

import pytest
import torch

from core.config import RunConfig
from core.data.template import TemplateEncoder
from core.evaluation.trained import load_trained
from core.runs import read_metrics
from core.training.runner import TrainingSession
from tests.moe_shapes import LITE_ARCHITECTURE, write_tiny_model

QUESTION = [{"role": "user", "content": "你是谁？"}]


def losses(run_dir, key: str = "loss") -> list[float]:
    return [m[key] for m in read_metrics(run_dir) if m.get(key) is not None]


def reloads_with_the_same_logits(run_dir, session) -> None:
    session.model.eval()
    ids = torch.tensor([TemplateEncoder(session.tokenizer, "auto").encode_prompt(QUESTION)])
    with torch.inference_mode():
        in_memory = session.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
    reloaded = load_trained(run_dir).logits(ids)[0, -1].float()
    assert torch.allclose(reloaded, in_memory, atol=1e-4), (reloaded - in_memory).abs().max()


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory):
    from transformers import Glm4MoeLiteConfig, Glm4MoeLiteForCausalLM

    folder = tmp_path_factory.mktemp("glm47-flash-tiny")
    return write_tiny_model(folder, Glm4MoeLiteConfig, Glm4MoeLiteForCausalLM, LITE_ARCHITECTURE, "glm47")


@pytest.mark.parametrize(
    "stage,model", [("dpo", "demo-moe"), ("orpo", "demo-moe"), ("kto", "demo-moe"), ("dpo", "lite")]
)
def test_preference_stages_train_a_moe(tmp_path, stage, model, lite_dir):
    config = RunConfig(
        model_name_or_path="demo-moe" if model == "demo-moe" else lite_dir,
        dataset="identity_pairs",
        stage=stage,
        learning_rate=5e-3,
        max_steps=16,
        num_train_epochs=0,
        per_device_train_batch_size=4,
    )
    session = TrainingSession(config, tmp_path / stage)
    status = session.run()
    assert status["state"] == "finished", status
    found = losses(tmp_path / stage)
    assert sum(found[-4:]) / 4 < 0.8 * sum(found[:4]) / 4, found
    metrics = [m for m in read_metrics(tmp_path / stage) if m.get("loss") is not None]
    assert metrics[-1]["reward_margin"] > metrics[0]["reward_margin"]
    balance = losses(tmp_path / stage, "router_aux_loss")
    assert balance and all(value >= 0.99 for value in balance), balance  # 1 when the load is even
    reloads_with_the_same_logits(tmp_path / stage, session)


@pytest.fixture(scope="module")
def dense_student_dir(tmp_path_factory):
    """A dense GLM-4 about the MoE demo's active size, with the MoE demo's tokenizer (so logits distillation
    applies: same vocabulary)."""
    from transformers import Glm4Config, Glm4ForCausalLM

    from core.models.demo import ARCHITECTURE

    folder = tmp_path_factory.mktemp("dense-student")
    shape = {**ARCHITECTURE, "num_hidden_layers": 2}
    return write_tiny_model(folder, Glm4Config, Glm4ForCausalLM, shape, "glm4_moe")


@pytest.mark.parametrize("student", ["dense", "auto"])
def test_distillation_from_a_moe_teacher(tmp_path, student, dense_student_dir):
    config = RunConfig(
        model_name_or_path="demo-moe",
        finetuning_type="distill",
        student_model=dense_student_dir if student == "dense" else "auto",
        dataset="tool_calls",
        distill_alpha=1.0,  # the KL to the teacher alone: its fall is the student moving toward the teacher
        learning_rate=2e-3,
        max_steps=16,
        per_device_train_batch_size=4,
    )
    session = TrainingSession(config, tmp_path / "student")
    status = session.run()
    assert status["state"] == "finished" and status["distill_mode"] == "logits", status
    found = losses(tmp_path / "student")
    assert sum(found[-4:]) / 4 < 0.7 * sum(found[:4]) / 4, found
    saved = (tmp_path / "student" / "model" / "config.json").read_text()
    assert ("Glm4ForCausalLM" if student == "dense" else "Glm4MoeForCausalLM") in saved
    reloads_with_the_same_logits(tmp_path / "student", session)


def test_glm5_trains_lora(tmp_path):
    """GLM-5's layout in miniature (MLA, the DSA indexer picking 16 tokens, so it really skips some, MoE after a
    dense first layer): LoRA reaches attention and the experts, not the indexer (top-k passes it no gradient)."""
    from transformers import GlmMoeDsaConfig, GlmMoeDsaForCausalLM

    shape = {
        **LITE_ARCHITECTURE,
        "first_k_dense_replace": 1,
        "index_topk": 16,
        "index_head_dim": 64,
        "index_n_heads": 2,
    }
    model_dir = write_tiny_model(tmp_path / "glm5-tiny", GlmMoeDsaConfig, GlmMoeDsaForCausalLM, shape, "glm47")
    config = RunConfig(
        model_name_or_path=model_dir,
        dataset="tool_calls",
        max_steps=16,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
    )
    session = TrainingSession(config, tmp_path / "run")
    status = session.run()
    assert status["state"] == "finished", status
    found = losses(tmp_path / "run")
    assert sum(found[-4:]) / 4 < 0.8 * sum(found[:4]) / 4, found
    adapter = (tmp_path / "run" / "adapter" / "adapter_config.json").read_text()
    assert "experts.gate_up_proj" in adapter and "q_b_proj" in adapter and "weights_proj" not in adapter
    reloads_with_the_same_logits(tmp_path / "run", session)

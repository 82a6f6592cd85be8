"""The MoE generation (GLM-4.5/4.6/4.7: Glm4MoeForCausalLM; GLM-4.7-Flash: Glm4MoeLiteForCausalLM, MLA + MoE) trains
by LoRA, freeze, full and QLoRA from a tools + reasoning dataset with no row skipped: the loss falls, LoRA adapts
the routed experts (peft's target_parameters) and never the router, and the result reloads with identical logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from core.config import RunConfig
from core.data.template import TemplateEncoder
from core.evaluation.trained import load_trained
from core.models.loader import load_tokenizer
from core.training.runner import TrainingSession
from tests.moe_shapes import LITE_ARCHITECTURE, write_tiny_model

RUNS = {
    "lora": dict(learning_rate=5e-3),
    "qlora": dict(learning_rate=5e-3, quantization_bit=4),
    "freeze": dict(learning_rate=2e-3, freeze_trainable_layers=2, freeze_extra_modules="lm_head"),
    "full": dict(learning_rate=1e-3),
}
QUESTION = [{"role": "user", "content": "北京今天天气怎么样？"}]


@pytest.fixture(scope="session")
def lite_model_dir(tmp_path_factory):
    """A tiny random Glm4MoeLiteForCausalLM with the MoE demo's tokenizer and GLM-4.7's template (auto picks glm47)."""
    from transformers import Glm4MoeLiteConfig, Glm4MoeLiteForCausalLM

    folder = tmp_path_factory.mktemp("glm47-flash-tiny")
    return write_tiny_model(folder, Glm4MoeLiteConfig, Glm4MoeLiteForCausalLM, LITE_ARCHITECTURE, "glm47")


# The quick loop trains one adapter run and one that trains the base, one on each architecture; the slow suite all 8.
QUICK = (("lora", "demo-moe"), ("full", "lite"))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((m, k), marks=() if (m, k) in QUICK else pytest.mark.slow, id=f"{m}-{k}")
        for k in ("demo-moe", "lite")
        for m in RUNS
    ],
)
def trained(request, tmp_path_factory, lite_model_dir):
    method, kind = request.param
    model = "demo-moe" if kind == "demo-moe" else lite_model_dir
    config = RunConfig(
        model_name_or_path=model,
        dataset="tool_calls",
        finetuning_type=method,
        max_steps=36,
        per_device_train_batch_size=4,
        **RUNS[method],
    )
    run_dir = tmp_path_factory.mktemp(f"{kind}-{method}") / "run"
    session = TrainingSession(config, run_dir)
    status = session.run()
    assert status["state"] == "finished", status
    session.model.eval()
    return method, run_dir, session


def test_no_row_is_skipped_and_the_template_is_the_models_own(trained):
    _, run_dir, session = trained
    template = "glm4_moe" if session.config.model_name_or_path == "demo-moe" else "glm47"
    log = (run_dir / "log.txt").read_text()
    assert f"data: format openai, template {template}, 24 train / 0 eval samples, 0 truncated" in log
    assert not (run_dir / "skipped_rows.txt").exists()


def test_loss_falls(trained):
    _, run_dir, _ = trained
    losses = [
        json.loads(line)["loss"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    quarter = len(losses) // 4
    assert sum(losses[-quarter:]) / quarter < 0.6 * sum(losses[:quarter]) / quarter, losses


def test_lora_adapts_the_routed_experts_and_never_the_router(trained):
    method, run_dir, _ = trained
    if method not in ("lora", "qlora"):
        pytest.skip("trains the base model itself")
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_parameters"]) == ["experts.down_proj", "experts.gate_up_proj"]
    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert any(".mlp.experts." in key for key in keys)  # the routed experts
    assert any(".shared_experts." in key for key in keys)  # the shared expert's Linear layers
    assert any(".layers.0.mlp.down_proj." in key for key in keys)  # the dense first layer's MLP
    assert not any(".mlp.gate." in key for key in keys), [k for k in keys if ".mlp.gate." in k]


def test_the_result_reloads_with_identical_logits(trained):
    _, run_dir, session = trained
    ids = torch.tensor([TemplateEncoder(session.tokenizer, "auto").encode_prompt(QUESTION)])
    with torch.inference_mode():
        in_memory = session.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
    reloaded = load_trained(run_dir).logits(ids)[0, -1].float()
    assert torch.allclose(reloaded, in_memory, atol=1e-4), (reloaded - in_memory).abs().max()


def test_qlora_says_what_it_cannot_quantize(trained):
    method, run_dir, _ = trained
    if method != "qlora":
        pytest.skip("QLoRA only")
    assert "routed experts' fused weights" in (run_dir / "log.txt").read_text()


def test_the_router_balance_loss_is_logged(trained):
    method, run_dir, _ = trained
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    values = [r["router_aux_loss"] for r in records if "router_aux_loss" in r]
    assert values and all(v >= 0.99 for v in values), values  # 1 when the load is even, more when it is not
    assert "moe: router balance loss on (coef 0.001" in (run_dir / "log.txt").read_text()


def test_the_balance_loss_grows_when_routing_collapses():
    from core.training.router_balance import RouterBalance

    balance = RouterBalance(torch.nn.Linear(1, 1))
    tokens, experts = 64, 8
    even = torch.zeros(tokens, experts)
    chosen_even = torch.arange(tokens * 2).reshape(tokens, 2) % experts
    collapsed = torch.full((tokens, experts), -4.0)
    collapsed[:, :2] = 4.0
    chosen_collapsed = torch.tensor([[0, 1]] * tokens)
    balance.caught = [(even, chosen_even)]
    assert balance.loss().item() == pytest.approx(1.0)
    balance.caught = [(collapsed, chosen_collapsed)]
    assert balance.loss().item() > 3.5  # two experts take every token: E/K = 4 times their share


def test_lora_target_names_the_experts_and_the_router_on_a_moe_only():
    from core.errors import ConfigError
    from core.training.preflight import check_settings

    check_settings(RunConfig(model_name_or_path="demo-moe", lora_target="q_proj,experts,router"))
    with pytest.raises(ConfigError, match="experts"):
        check_settings(RunConfig(model_name_or_path="demo", lora_target="q_proj,experts"))


def test_named_linear_targets_stay_the_linear_layers_and_reload(tmp_path):
    """`lora_target: gate_proj,up_proj,down_proj` on a MoE model means the dense first layer's and the shared
    experts' Linear layers (transformers 5's names), not peft's transformers-4 reading of them as the routed experts;
    the adapter reloads with the same outputs."""
    from peft import PeftModel

    from core.methods.lora import prepare
    from core.models.demo import MOE_DEMO_NAME, ensure_demo_model
    from core.models.loader import load_model

    path = str(ensure_demo_model(name=MOE_DEMO_NAME))
    config = RunConfig(model_name_or_path=path, lora_target="q_proj,gate_proj,up_proj,down_proj", lora_rank=4)
    model = prepare(load_model(path, device="cpu"), config)
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any(".shared_experts.gate_proj.lora_A" in name for name in trained)
    assert any(".layers.0.mlp.down_proj.lora_A" in name for name in trained)
    assert not any(".experts." in name.replace("shared_experts", "") for name in trained), trained
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)  # a trained-looking adapter: the reload check means something
    model.save_pretrained(tmp_path)
    ids = torch.tensor([TemplateEncoder(load_tokenizer(path), "auto").encode_prompt(QUESTION)])
    reloaded = PeftModel.from_pretrained(load_model(path, device="cpu"), str(tmp_path))
    with torch.inference_mode():
        assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)

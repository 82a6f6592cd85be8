"""The memory estimate knows the MoE generation: parameter counts (total and active) equal transformers' own on
tiny models of each shape, LoRA's trainable count equals what peft trains (routed experts included), and the real
configs give the published sizes."""

from __future__ import annotations

import pytest
from transformers import (
    Glm4MoeConfig,
    Glm4MoeForCausalLM,
    Glm4MoeLiteConfig,
    Glm4MoeLiteForCausalLM,
    GlmMoeDsaConfig,
    GlmMoeDsaForCausalLM,
)

from core.config import RunConfig
from core.estimate import ModelShape, estimate_memory
from tests.moe_shapes import LITE_ARCHITECTURE

TINY_45 = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    moe_intermediate_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    first_k_dense_replace=2,
    attention_bias=True,
    use_qk_norm=True,
)
TINY_FLASH = dict(LITE_ARCHITECTURE, vocab_size=512)
TINY_GLM5 = dict(TINY_FLASH, first_k_dense_replace=1, index_topk=16, index_head_dim=64, index_n_heads=2)
CLASSES = {"glm4_moe": Glm4MoeForCausalLM, "glm4_moe_lite": Glm4MoeLiteForCausalLM, "glm_moe_dsa": GlmMoeDsaForCausalLM}
# The real configs (config.json of zai-org/GLM-4.5, GLM-4.5-Air, GLM-4.7-Flash; GLM-4.6 and 4.7 share GLM-4.5's).
GLM45 = dict(
    vocab_size=151552,
    hidden_size=5120,
    intermediate_size=12288,
    moe_intermediate_size=1536,
    num_hidden_layers=92,
    num_attention_heads=96,
    num_key_value_heads=8,
    head_dim=128,
    n_routed_experts=160,
    num_experts_per_tok=8,
    n_shared_experts=1,
    first_k_dense_replace=3,
    attention_bias=True,
    use_qk_norm=True,
)
AIR = dict(
    GLM45,
    hidden_size=4096,
    intermediate_size=10944,
    moe_intermediate_size=1408,
    num_hidden_layers=46,
    n_routed_experts=128,
    first_k_dense_replace=1,
    use_qk_norm=False,
)
FLASH = dict(
    vocab_size=154880,
    hidden_size=2048,
    intermediate_size=10240,
    moe_intermediate_size=1536,
    num_hidden_layers=47,
    num_attention_heads=20,
    num_key_value_heads=20,
    n_routed_experts=64,
    num_experts_per_tok=4,
    n_shared_experts=1,
    kv_lora_rank=512,
    q_lora_rank=768,
    qk_rope_head_dim=64,
    qk_nope_head_dim=192,
    v_head_dim=256,
)


@pytest.mark.parametrize(
    "config",
    [
        Glm4MoeConfig(**TINY_45),
        Glm4MoeLiteConfig(**TINY_FLASH),
        Glm4MoeLiteConfig(**{**TINY_FLASH, "q_lora_rank": None}),
        GlmMoeDsaConfig(**TINY_GLM5),
    ],
    ids=["glm4_moe", "glm4_moe_lite", "glm4_moe_lite-no-q-lora", "glm_moe_dsa"],
)
def test_parameter_counts_equal_transformers(config):
    model = CLASSES[config.model_type](config)
    shape = ModelShape.from_config(config)
    assert shape.total_params == model.num_parameters()
    unused = (config.n_routed_experts - config.num_experts_per_tok) * 3 * config.hidden_size
    unused *= config.moe_intermediate_size * shape.moe_layers
    assert shape.active_params == shape.total_params - unused


def test_lora_trainable_count_equals_what_peft_trains():
    from core.methods.lora import prepare

    config = RunConfig(model_name_or_path="demo-moe", finetuning_type="lora", lora_rank=4)
    model = prepare(Glm4MoeForCausalLM(Glm4MoeConfig(**TINY_45)), config)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert estimate_memory(ModelShape.from_config(Glm4MoeConfig(**TINY_45)), config).trainable_params == trained


@pytest.mark.parametrize(
    ("config", "total", "active"),
    [
        (Glm4MoeConfig(**GLM45), (352, 354), (32, 33)),
        (Glm4MoeConfig(**AIR), (106, 107.5), (12, 13)),
        (Glm4MoeLiteConfig(**FLASH), (29.5, 30.5), (3, 3.7)),
        (GlmMoeDsaConfig(), (743, 745), (40, 41.5)),
    ],
    ids=["GLM-4.5", "GLM-4.5-Air", "GLM-4.7-Flash", "GLM-5"],
)
def test_the_real_configs_give_the_published_sizes(config, total, active):
    """Billions: GLM-4.5 355B-A32B (the hub's 358B counts its multi-token-prediction layer, which transformers does
    not load), Air 106B-A12B, 4.7-Flash 30B-A3B (labels rounded down), GLM-5 744B-A40B (transformers'
    GlmMoeDsaConfig defaults, documented as zai-org/GLM-5's); active counts leave out the input embedding."""
    shape = ModelShape.from_config(config)
    assert total[0] < shape.total_params / 1e9 < total[1]
    active_published = (shape.active_params - shape.vocab * shape.hidden) / 1e9
    assert active[0] < active_published < active[1]

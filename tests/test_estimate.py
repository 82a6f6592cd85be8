"""The memory estimator: parameter counts match real models, and the formula's parts follow the docstring."""

from __future__ import annotations

import pytest

from core.config import RunConfig
from core.estimate import ModelShape, estimate_memory
from core.methods import get_method
from core.methods.base import count_parameters

GLM4_9B = dict(
    vocab_size=151552,
    hidden_size=4096,
    intermediate_size=13696,
    num_hidden_layers=40,
    num_attention_heads=32,
    num_key_value_heads=2,
    head_dim=128,
)


@pytest.fixture(scope="module")
def demo_shape(demo_model_dir):
    from transformers import AutoConfig

    return ModelShape.from_config(AutoConfig.from_pretrained(demo_model_dir))


@pytest.mark.parametrize(
    "method, settings",
    [
        ("lora", dict(lora_rank=8)),
        ("lora", dict(lora_rank=4, lora_target="q_proj,v_proj")),
        ("freeze", dict(freeze_trainable_layers=2)),
        ("full", {}),
        ("ptuning_v2", dict(pre_seq_len=16)),
        ("ptuning_v2", dict(pre_seq_len=8, prefix_projection=True)),
    ],
)
def test_parameter_counts_match_the_prepared_model(demo_model_dir, demo_shape, method, settings):
    from core.models.loader import load_model

    config = RunConfig(finetuning_type=method, **settings)
    model = get_method(method).prepare(load_model(str(demo_model_dir)), config)
    trainable, total = count_parameters(model)
    assert get_method(method).trainable_params(demo_shape, config) == trainable
    if method in ("full", "freeze"):
        assert demo_shape.total_params == total


def test_glm4_9b_shape_has_9_4_billion_parameters():
    from transformers import GlmConfig

    assert round(ModelShape.from_config(GlmConfig(**GLM4_9B)).total_params / 1e9, 2) == 9.40


def test_formula_parts():
    from transformers import GlmConfig

    shape = ModelShape.from_config(GlmConfig(**GLM4_9B))
    lora = estimate_memory(
        shape, RunConfig(finetuning_type="lora", cutoff_len=1024, per_device_train_batch_size=2, fused_loss=False)
    )
    trainable = lora.trainable_params
    assert lora.weights == 2 * shape.total_params + 4 * trainable
    assert (lora.gradients, lora.optimizer) == (4 * trainable, 8 * trainable)
    assert lora.logits == 2 * 1024 * shape.vocab * 8
    fused = estimate_memory(shape, RunConfig(finetuning_type="lora", cutoff_len=1024, per_device_train_batch_size=2))
    assert fused.logits < lora.logits / 5 and fused.total < lora.total - 2 * 2**30  # no full fp32 logits
    checkpointed = estimate_memory(
        shape,
        RunConfig(finetuning_type="lora", cutoff_len=1024, per_device_train_batch_size=2, gradient_checkpointing=True),
    )
    assert checkpointed.activations < lora.activations / 10
    qlora = estimate_memory(shape, RunConfig(finetuning_type="qlora", cutoff_len=1024, per_device_train_batch_size=2))
    full = estimate_memory(shape, RunConfig(finetuning_type="full", cutoff_len=1024, per_device_train_batch_size=2))
    assert qlora.total < lora.total < full.total
    assert full.optimizer == 8 * shape.total_params
    assert 150 < full.total / 2**30 < 200  # does not fit one 141 GiB card: the GPU check skips it


# ---- ChatGLM-6B (v1) ------------------------------------------------------------------------------------------

# THUDM/chatglm-6b's config.json (final revision), as the estimate reads it: no weights, no tokenizer needed.
CHATGLM_6B_CONFIG = {
    "model_type": "chatglm",
    "architectures": ["ChatGLMModel"],
    "vocab_size": 130528,
    "hidden_size": 4096,
    "inner_hidden_size": 16384,
    "num_layers": 28,
    "num_attention_heads": 32,
    "max_sequence_length": 2048,
    "position_encoding_2d": True,
    "layernorm_epsilon": 1e-05,
    "bos_token_id": 130004,
    "eos_token_id": 130005,
    "mask_token_id": 130000,
    "gmask_token_id": 130001,
    "pad_token_id": 3,
    "torch_dtype": "float16",
}


def chatglm_6b_parameters(vocab: int) -> int:
    """Counted from THUDM's module shapes: query_key_value (h, 3h), dense (h, h), dense_h_to_4h (h, 4h),
    dense_4h_to_h (4h, h), each with a bias; two LayerNorms (weight and bias) per layer and a final one; the word
    embeddings, which lm_head shares."""
    h, ffn, layers = 4096, 16384, 28
    linear = (h * 3 * h + 3 * h) + (h * h + h) + (h * ffn + ffn) + (ffn * h + h)
    return vocab * h + layers * (linear + 2 * 2 * h) + 2 * h


def test_chatglm_6b_has_6_17_billion_parameters_read_from_its_config_alone(tmp_path):
    """THUDM's figure is ~6.2B. The shape comes from config.json alone: the folder has no weights and no
    tokenizer, and nothing is converted."""
    import json

    from core.config import RunConfig
    from core.estimate import estimate_for_run

    (tmp_path / "config.json").write_text(json.dumps(CHATGLM_6B_CONFIG))
    estimate = estimate_for_run(RunConfig(model_name_or_path=str(tmp_path), finetuning_type="full"), on_gpu=True)
    assert estimate.total_params == chatglm_6b_parameters(130528) == 6_173_286_400
    assert round(estimate.total_params / 1e9, 2) == 6.17
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    # The first release numbered its text tokens after 20,000 image tokens: a 150,528-token vocabulary.
    (tmp_path / "config.json").write_text(json.dumps({**CHATGLM_6B_CONFIG, "vocab_size": 150528}))
    first = estimate_for_run(RunConfig(model_name_or_path=str(tmp_path), finetuning_type="full"), on_gpu=True)
    assert first.total_params == chatglm_6b_parameters(150528) == 6_255_206_400


def test_chatglm_6b_shape_and_activations():
    from core.models.glm1 import Glm1Config

    config = {k: CHATGLM_6B_CONFIG[k] for k in ("vocab_size", "hidden_size", "num_attention_heads")}
    shape = ModelShape.from_config(
        Glm1Config(**config, intermediate_size=16384, num_hidden_layers=28, max_position_embeddings=2048)
    )
    h = 4096
    assert shape.glm1 and shape.tied_embeddings and shape.kv_heads == shape.heads == 32
    assert shape.linear_shapes == {
        "query_key_value": (h, 3 * h),
        "dense": (h, h),
        "dense_h_to_4h": (h, 4 * h),
        "dense_4h_to_h": (4 * h, h),
    }
    assert shape.activation_values == 12 * h + 2 * 16384  # GeLU's input and output: the MLP is not gated
    lora = estimate_memory(shape, RunConfig(finetuning_type="lora", lora_target="query_key_value", lora_rank=8))
    assert lora.trainable_params == 28 * 8 * (h + 3 * h) == 3_670_016


@pytest.fixture(scope="module")
def chatglm6b_native(tmp_path_factory):
    from core.models.chatglm_v1 import convert_chatglm_v1
    from tests.conftest import REPO

    target = tmp_path_factory.mktemp("glm1-estimate") / "native"
    convert_chatglm_v1(REPO / "tests" / "fixtures" / "chatglm6b" / "checkpoint", target)
    return target


@pytest.mark.parametrize(
    "method, settings",
    [
        ("lora", dict(lora_rank=8)),
        ("lora", dict(lora_rank=4, lora_target="query_key_value,dense_4h_to_h")),
        ("loraplus", dict(lora_rank=8)),
        ("freeze", dict(freeze_trainable_layers=1)),
        ("freeze", dict(freeze_trainable_layers=2, freeze_extra_modules="lm_head")),
        ("freeze", dict(freeze_trainable_layers=-1, freeze_extra_modules="word_embeddings")),
        ("full", {}),
        ("ptuning_v2", dict(pre_seq_len=16)),
        ("ptuning_v2", dict(pre_seq_len=8, prefix_projection=True)),
    ],
)
def test_chatglm_6b_parameter_counts_match_the_prepared_fixture_model(chatglm6b_native, method, settings):
    import torch
    from transformers import AutoConfig

    from core.models.loader import load_model

    shape = ModelShape.from_config(AutoConfig.from_pretrained(chatglm6b_native))
    assert shape.glm1
    config = RunConfig(finetuning_type=method, **settings)
    model = get_method(method).prepare(load_model(str(chatglm6b_native), dtype=torch.float32, device="cpu"), config)
    trainable, total = count_parameters(model)
    assert get_method(method).trainable_params(shape, config) == trainable
    if method in ("full", "freeze"):
        assert shape.total_params == total


def test_freeze_names_the_models_own_modules_when_an_extra_matches_nothing(chatglm6b_native):
    import torch

    from core.errors import ConfigError
    from core.models.loader import load_model

    model = load_model(str(chatglm6b_native), dtype=torch.float32, device="cpu")
    config = RunConfig(finetuning_type="freeze", freeze_extra_modules="embed_tokens")
    with pytest.raises(ConfigError, match="word_embeddings, final_layernorm, lm_head"):
        get_method("freeze").prepare(model, config)


def test_preference_stages_count_both_answers_and_the_reference():
    """DPO runs a pair's two answers as one batch (twice the activations of SFT at the same batch size); with full
    fine-tuning it also holds a frozen reference copy in the compute dtype; ORPO and SimPO need no reference."""
    shape = ModelShape.from_config(type("Config", (), GLM4_9B)())
    sft = estimate_memory(shape, RunConfig(finetuning_type="full"))
    dpo = estimate_memory(shape, RunConfig(finetuning_type="full", stage="dpo"))
    orpo = estimate_memory(shape, RunConfig(finetuning_type="full", stage="orpo"))
    kto = estimate_memory(shape, RunConfig(finetuning_type="full", stage="kto"))
    assert dpo.activations == orpo.activations == 2 * sft.activations == 2 * kto.activations
    assert dpo.weights == kto.weights == sft.weights + 2 * shape.total_params == orpo.weights + 2 * shape.total_params
    simpo = estimate_memory(shape, RunConfig(finetuning_type="full", stage="simpo"))
    assert (simpo.activations, simpo.weights) == (orpo.activations, orpo.weights)
    lora_sft = estimate_memory(shape, RunConfig(finetuning_type="lora"))
    assert estimate_memory(shape, RunConfig(finetuning_type="lora", stage="dpo")).weights == lora_sft.weights

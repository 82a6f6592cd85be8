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


def test_preference_stages_count_both_answers_and_the_reference():
    """DPO runs a pair's two answers as one batch (twice the activations of SFT at the same batch size); with full
    fine-tuning it also holds a frozen reference copy in the compute dtype; ORPO needs no reference."""
    shape = ModelShape.from_config(type("Config", (), GLM4_9B)())
    sft = estimate_memory(shape, RunConfig(finetuning_type="full"))
    dpo = estimate_memory(shape, RunConfig(finetuning_type="full", stage="dpo"))
    orpo = estimate_memory(shape, RunConfig(finetuning_type="full", stage="orpo"))
    kto = estimate_memory(shape, RunConfig(finetuning_type="full", stage="kto"))
    assert dpo.activations == orpo.activations == 2 * sft.activations == 2 * kto.activations
    assert dpo.weights == kto.weights == sft.weights + 2 * shape.total_params == orpo.weights + 2 * shape.total_params
    lora_sft = estimate_memory(shape, RunConfig(finetuning_type="lora"))
    assert estimate_memory(shape, RunConfig(finetuning_type="lora", stage="dpo")).weights == lora_sft.weights

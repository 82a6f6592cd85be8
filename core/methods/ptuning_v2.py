"""P-tuning v2 (deep prefix tuning, as in ChatGLM's P-tuning v2): a trained key/value prefix at every layer.

Training uses peft's prefix tuning. Generation does NOT use `PeftModel.generate`: with transformers 5.24 and
peft 0.21 it passes the prefix as the deprecated `past_key_values`, the GLM forward prefers its own `cache`,
and the prefix is silently dropped (the output equals the base model's). Instead `PrefixAdapter` turns the
saved prefix into a `DynamicCache` and hands it to the base model's `generate` as `cache`, with the attention
mask extended over the prefix: the same computation as the training forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelError
from core.methods.base import ADAPTER, Field, Method
from core.methods.lora import load_for_more_training

PREFIX_WEIGHTS_KEY = "prompt_embeddings"


@dataclass
class PrefixOptions:
    pre_seq_len: int = 16  # the prefix's length in virtual tokens
    prefix_projection: bool = False  # reparameterise the prefix through an MLP while training


FIELDS = (Field("pre_seq_len", "int"), Field("prefix_projection", "bool"))


def check(config, check) -> None:
    check(config.pre_seq_len >= 1, "pre_seq_len", "config.at_least", limit=1)


def trainable_params(shape, config) -> int:
    token_width = shape.kv_heads * shape.head_dim  # one layer's key (or value) width
    prefix_width = shape.layers * 2 * token_width
    if config.prefix_projection:  # peft's PrefixEncoder: embedding, then a two-layer MLP (hidden = model's)
        return config.pre_seq_len * token_width + (token_width + 1) * shape.hidden + (shape.hidden + 1) * prefix_width
    return config.pre_seq_len * prefix_width


def attention_scores_bytes(shape, config, compute_bytes: int) -> float:
    """A prefix cache means an explicit attention mask: attention runs unfused and keeps its probabilities
    (two tensors of batch*heads*cutoff*(cutoff+prefix) per layer that gradients pass)."""
    scores = (
        config.per_device_train_batch_size * shape.heads * config.cutoff_len * (config.cutoff_len + config.pre_seq_len)
    )
    return 2 * compute_bytes * scores * (1 if config.gradient_checkpointing else shape.layers)


def prepare(model, config):
    from peft import PrefixTuningConfig, get_peft_model

    if config.adapter_name_or_path:
        return load_for_more_training(model, config)
    peft_config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=config.pre_seq_len,
        prefix_projection=config.prefix_projection,
        encoder_hidden_size=model.config.hidden_size,
    )
    return get_peft_model(model, peft_config)


def is_prefix_adapter(folder: str | Path) -> bool:
    import json

    from core.runs import ADAPTER_CONFIG

    config_path = Path(folder) / ADAPTER_CONFIG
    return config_path.is_file() and json.loads(config_path.read_text()).get("peft_type") == "PREFIX_TUNING"


@dataclass
class PrefixAdapter:
    """A saved P-tuning v2 prefix, ready to be given to any generate/forward call of its base model."""

    embeddings: object  # tensor [num_virtual_tokens, num_layers * 2 * kv_heads * head_dim]
    num_layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def load(cls, folder: str | Path) -> PrefixAdapter:
        from peft import PeftConfig
        from safetensors.torch import load_file

        peft_config = PeftConfig.from_pretrained(str(folder))
        weights = load_file(str(Path(folder) / "adapter_model.safetensors"))
        if PREFIX_WEIGHTS_KEY not in weights:
            raise ModelError("model.no_prefix_weights", folder=str(folder), key=PREFIX_WEIGHTS_KEY)
        heads = peft_config.num_attention_heads
        return cls(weights[PREFIX_WEIGHTS_KEY], peft_config.num_layers, heads, peft_config.token_dim // heads)

    @property
    def length(self) -> int:
        return self.embeddings.shape[0]

    def cache(self, model, batch_size: int = 1):
        """A fresh DynamicCache holding the prefix (generation appends to it, so never reuse one)."""
        from transformers import DynamicCache

        values = self.embeddings.to(device=model.device, dtype=model.dtype)
        values = values.view(1, self.length, self.num_layers * 2, self.kv_heads, self.head_dim)
        values = values.expand(batch_size, -1, -1, -1, -1).permute(2, 0, 3, 1, 4)  # [2L, B, H, P, D]
        cache = DynamicCache(config=model.config)
        for layer in range(self.num_layers):
            cache.update(values[2 * layer].contiguous(), values[2 * layer + 1].contiguous(), layer)
        return cache

    def generate_kwargs(self, model, input_ids, attention_mask) -> dict:
        """Arguments that make `model.generate` (or a forward) see the prefix."""
        import torch

        prefix_mask = torch.ones(
            input_ids.shape[0], self.length, dtype=attention_mask.dtype, device=attention_mask.device
        )
        return {
            "input_ids": input_ids,
            "attention_mask": torch.cat([prefix_mask, attention_mask], dim=1),
            "cache": self.cache(model, input_ids.shape[0]),
        }


def input_adapter(folder: Path) -> PrefixAdapter | None:
    """A saved prefix, for the chat and a loaded run to hand to generate (never into the model's layers)."""
    return PrefixAdapter.load(folder) if is_prefix_adapter(folder) else None


METHOD = Method(
    name="ptuning_v2",
    preference=False,
    input_adapter=input_adapter,
    prefix_cache=True,
    output_dir=ADAPTER,
    prepare=prepare,
    trainable_params=trainable_params,
    options=PrefixOptions,
    fields=FIELDS,
    check=check,
    extra_activation_bytes=attention_scores_bytes,
    learning_rates=(1e-2, 2e-2),
)

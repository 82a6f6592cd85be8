"""Estimate a run's peak accelerator memory before it starts, from the model's config alone.

    peak = weights + gradients + optimizer state + activations + logits + runtime overhead

- weights: every parameter at its storage width: fp32 where the base itself trains (full, freeze: the
  Trainer keeps fp32 master weights and autocasts), the compute dtype where the base is frozen (2 bytes on a
  GPU), and for QLoRA the quantized linear layers at 4.5 bits (nf4/fp4 + block scales) or 8 bits, while
  what is not quantized (embeddings, lm_head, norms) is upcast to fp32 by prepare_model_for_kbit_training.
- gradients: 4 bytes per trainable parameter; optimizer (AdamW): two fp32 moments, 8 bytes per trainable one.
- activations, per token and decoder layer, saved for the backward pass of a GLM block (bf16):
  about 12*hidden + 5*intermediate values (norm inputs/outputs, q/k/v, attention output, the residual
  branches, gate_up, the SiLU product and its input); with gradient checkpointing only the layer input
  (hidden values) is kept per layer, plus one layer's full set while it is recomputed. Only layers that
  gradients flow through count: for freeze, the trainable last N. P-tuning v2 adds the attention
  probabilities (2 tensors of batch*heads*cutoff*(cutoff+prefix) per layer), since a prefix cache makes
  attention take an explicit mask and run unfused.
- logits: batch * cutoff_len * vocab, computed and upcast to fp32 for the loss, and its gradient: 8 bytes each.
- overhead: 0.75 GiB for the CUDA context and kernels, and 10% on top of the rest for allocator slack.

It is an estimate for sizing (batch, cutoff, method) before renting a GPU, not an exact figure: bench/
compares it with measured peaks (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import RunConfig

GIB = 2**30
CONTEXT_BYTES = 0.75 * GIB
SLACK = 1.10


@dataclass
class ModelShape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        heads = config.num_attention_heads
        return cls(vocab=config.vocab_size, hidden=config.hidden_size, intermediate=config.intermediate_size,
                   layers=config.num_hidden_layers, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                   head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                   tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)))

    # parameter counts -----------------------------------------------------------------------------------------
    @property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block, by its transformers name."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_up_proj": (self.hidden, 2 * self.intermediate),
                "down_proj": (self.intermediate, self.hidden)}

    @property
    def layer_linear_params(self) -> int:
        return sum(i * o for i, o in self.linear_shapes.values())

    @property
    def layer_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.layer_linear_params + q + 2 * kv + 4 * self.hidden  # qkv biases, up to four norms

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.layers * self.layer_params + self.hidden


@dataclass
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float
    trainable_params: int
    total_params: int

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.overhead

    def parts_gib(self) -> dict[str, float]:
        names = ("weights", "gradients", "optimizer", "activations", "logits", "overhead", "total")
        return {name: round(getattr(self, name) / GIB, 2) for name in names}


def trainable_params(shape: ModelShape, config: RunConfig) -> int:
    method = config.finetuning_type
    if method == "full":
        return shape.total_params
    if method == "distill":  # the "auto" student: every other layer of the teacher, trained fully
        return shape.total_params - (shape.layers // 2) * shape.layer_params
    if method == "freeze":
        extra = shape.vocab * shape.hidden if "lm_head" in config.freeze_extra_modules else 0
        extra += shape.vocab * shape.hidden if "embed_tokens" in config.freeze_extra_modules else 0
        return min(abs(config.freeze_trainable_layers), shape.layers) * shape.layer_params + extra
    if method in ("lora", "qlora"):
        wanted = None if config.lora_target.strip() == "all" else {
            name.strip() for name in config.lora_target.split(",")}
        per_layer = sum(config.lora_rank * (i + o) for name, (i, o) in shape.linear_shapes.items()
                        if wanted is None or name in wanted)
        return per_layer * shape.layers
    if method == "ptuning_v2":
        token_width = shape.kv_heads * shape.head_dim  # one layer's key (or value) width
        prefix_width = shape.layers * 2 * token_width
        if config.prefix_projection:  # peft's PrefixEncoder: embedding, then a two-layer MLP (hidden = model's)
            return (config.pre_seq_len * token_width + (token_width + 1) * shape.hidden
                    + (shape.hidden + 1) * prefix_width)
        return config.pre_seq_len * prefix_width
    raise ValueError(f"unknown method {method}")


def estimate_memory(shape: ModelShape, config: RunConfig, on_gpu: bool = True) -> MemoryEstimate:
    compute_bytes = 2 if on_gpu and config.precision != "fp32" else 4
    trainable = trainable_params(shape, config)
    total = shape.total_params
    linear = shape.layers * shape.layer_linear_params
    if config.finetuning_type in ("full", "freeze"):
        weights = 4 * total
    elif config.finetuning_type == "distill":  # fp32 student that trains + the frozen teacher
        weights = 4 * trainable + compute_bytes * total
    elif config.finetuning_type == "qlora":
        # prepare_model_for_kbit_training upcasts what is not quantized (embeddings, lm_head, norms) to fp32.
        bits = 4.5 if config.quantization_bit == 4 else 8
        weights = linear * bits / 8 + (total - linear) * 4 + trainable * 4
    else:
        weights = total * compute_bytes + trainable * 4
    tokens = config.per_device_train_batch_size * config.cutoff_len
    per_token_layer = (12 * shape.hidden + 5 * shape.intermediate) * compute_bytes
    # Only layers that gradients flow through keep activations: with freeze, the trainable last ones.
    layers = shape.layers
    if config.finetuning_type == "freeze" and config.freeze_trainable_layers > 0:
        layers = min(config.freeze_trainable_layers, shape.layers)
    if config.gradient_checkpointing:
        activations = tokens * (layers * shape.hidden * compute_bytes + per_token_layer)
    else:
        activations = tokens * layers * per_token_layer
    if config.finetuning_type == "ptuning_v2":
        # A prefix cache means an explicit attention mask: attention runs unfused and keeps its probabilities.
        scores = config.per_device_train_batch_size * shape.heads * config.cutoff_len * (
            config.cutoff_len + config.pre_seq_len)
        activations += 2 * compute_bytes * scores * (1 if config.gradient_checkpointing else layers)
    logits = tokens * shape.vocab * 8
    gradients = 4 * trainable
    optimizer = 8 * trainable
    subtotal = weights + gradients + optimizer + activations + logits
    overhead = (CONTEXT_BYTES if on_gpu else 0) + (SLACK - 1) * subtotal
    return MemoryEstimate(weights, gradients, optimizer, activations, logits, overhead, trainable, total)


def estimate_for_run(config: RunConfig, on_gpu: bool | None = None) -> MemoryEstimate:
    """Read the model's config (no weights) and estimate; on_gpu defaults to whether a GPU is present."""
    from transformers import AutoConfig

    from core.models.loader import resolve_model_path

    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    model_config = AutoConfig.from_pretrained(resolve_model_path(config.model_name_or_path))
    return estimate_memory(ModelShape.from_config(model_config), config, on_gpu)


def device_memory_bytes() -> tuple[str, float] | None:
    """(name, total bytes) of the first GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return properties.name, float(properties.total_memory)

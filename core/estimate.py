"""Estimate a run's peak accelerator memory before it starts, from the model's config alone.

    peak = weights + gradients + optimizer state + activations + logits + runtime overhead

- weights: every parameter at its storage width, as the method says (`Method.weight_bytes`): fp32 where the
  base itself trains (the Trainer keeps fp32 master weights and autocasts), the compute dtype where the base
  is frozen (2 bytes on a GPU), quantized widths where the base is quantized.
- gradients: 4 bytes per trainable parameter (`Method.trainable_params`); optimizer (AdamW): two fp32 moments,
  8 bytes per trainable one.
- activations, per token and decoder layer, saved for the backward pass of a GLM block (bf16):
  about 12*hidden + 5*intermediate values (norm inputs/outputs, q/k/v, attention output, the residual
  branches, gate_up, the SiLU product and its input); ChatGLM-6B's MLP is not gated (dense_h_to_4h, GeLU,
  dense_4h_to_h), so 12*hidden + 2*intermediate (the GeLU's input and output). With gradient checkpointing
  only the layer input (hidden values) is kept per layer, plus one layer's full set while it is recomputed.
  Only layers that gradients flow through count (`Method.backprop_layers`), and a method may keep more
  (`Method.extra_activation_bytes`: a prefix cache makes attention run unfused and keep its probabilities).
- logits: with the fused loss (the default) at most three chunks of fp32 logits exist at a time (about 128 MiB
  each); without it, batch * cutoff_len * vocab, upcast to fp32 for the loss, and its gradient: 8 bytes each.
- overhead: 0.75 GiB for the CUDA context and kernels, and 10% on top of the rest for allocator slack.
- a preference stage (dpo, orpo, kto): DPO and ORPO run each pair's chosen and rejected answers as one batch
  (twice the tokens that keep activations); KTO's extra forward passes (the KL term, the reference) keep none.
  Their log-probabilities come from TRL's chunked LM head (counted like the fused loss), and DPO and KTO with
  freeze or full fine-tuning hold a frozen reference copy of the model in the compute dtype.

It is an estimate for sizing (batch, cutoff, method) before renting a GPU, not an exact figure: bench/
compares it with measured peaks (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import RunConfig

GIB = 2**30
CONTEXT_BYTES = 0.75 * GIB
SLACK = 1.10


GLM1_MODEL_TYPE = "glm1_workbench"  # core.models.glm1's model_type (not imported: this module stays light)


@dataclass
class ModelShape:
    """The sizes the estimate needs. Two block layouts: GLM / GLM-4 (transformers' native classes: q/k/v/o, gated
    SiLU MLP, RMSNorm, biases on q/k/v only) and ChatGLM-6B (`glm1`: THUDM's fused query_key_value, dense,
    dense_h_to_4h, dense_4h_to_h with biases everywhere, GeLU MLP not gated, LayerNorm with bias)."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool = False
    glm1: bool = False

    @classmethod
    def from_config(cls, config) -> ModelShape:
        heads = config.num_attention_heads
        return cls(
            vocab=config.vocab_size,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            glm1=getattr(config, "model_type", "") == GLM1_MODEL_TYPE,
        )

    # parameter counts -----------------------------------------------------------------------------------------
    @property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block, by its module name (LoRA's targets)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.glm1:
            return {
                "query_key_value": (self.hidden, q + 2 * kv),
                "dense": (q, self.hidden),
                "dense_h_to_4h": (self.hidden, self.intermediate),
                "dense_4h_to_h": (self.intermediate, self.hidden),
            }
        return {
            "q_proj": (self.hidden, q),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden),
            "gate_up_proj": (self.hidden, 2 * self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }

    @property
    def layer_linear_params(self) -> int:
        return sum(i * o for i, o in self.linear_shapes.values())

    @property
    def norm_params(self) -> int:
        """One norm's parameters: LayerNorm's weight and bias (ChatGLM-6B), RMSNorm's weight (GLM)."""
        return 2 * self.hidden if self.glm1 else self.hidden

    @property
    def layer_params(self) -> int:
        if self.glm1:  # a bias on every linear layer, two LayerNorms
            return self.layer_linear_params + sum(o for _, o in self.linear_shapes.values()) + 2 * self.norm_params
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.layer_linear_params + q + 2 * kv + 4 * self.hidden  # qkv biases, up to four norms

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.layers * self.layer_params + self.norm_params

    # activations ----------------------------------------------------------------------------------------------
    @property
    def activation_values(self) -> int:
        """Values one token keeps per decoder layer for the backward pass (see the module docstring)."""
        return 12 * self.hidden + (2 if self.glm1 else 5) * self.intermediate


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


def estimate_memory(shape: ModelShape, config: RunConfig, on_gpu: bool = True) -> MemoryEstimate:
    """The method supplies its own terms (trainable parameters, weight bytes, which layers keep activations,
    extra activations); the rest is the same for every method."""
    from core.methods import get_method

    method = get_method(config.finetuning_type)
    compute_bytes = 2 if on_gpu and config.precision != "fp32" else 4
    trainable = method.trainable_params(shape, config)
    weights = method.weight_bytes(shape, config, compute_bytes, trainable)
    preference = config.stage != "sft"
    rows = 2 if config.stage in ("dpo", "orpo") else 1  # a pair's chosen and rejected answers, side by side
    tokens = config.per_device_train_batch_size * config.cutoff_len * rows
    if preference and config.stage != "orpo" and method.trains_base:
        weights += compute_bytes * shape.total_params  # the frozen reference model
    per_token_layer = shape.activation_values * compute_bytes
    layers = method.backprop_layers(shape, config)
    if config.gradient_checkpointing and config.offload_activations:
        activations = tokens * per_token_layer  # the layers' inputs wait in CPU memory: one layer's recomputation
    elif config.gradient_checkpointing:
        activations = tokens * (layers * shape.hidden * compute_bytes + per_token_layer)
    else:
        activations = tokens * layers * per_token_layer
    activations += method.extra_activation_bytes(shape, config, compute_bytes)
    if config.fused_loss or preference:  # a few chunks of fp32 logits at a time (core/training/fused_loss.py)
        from core.training.fused_loss import CHUNK_BUFFERS, default_chunk_size

        logits = min(tokens, default_chunk_size(shape.vocab)) * shape.vocab * 4 * CHUNK_BUFFERS
    else:
        logits = tokens * shape.vocab * 8
    gradients = 4 * trainable
    optimizer = 8 * trainable
    subtotal = weights + gradients + optimizer + activations + logits
    overhead = (CONTEXT_BYTES if on_gpu else 0) + (SLACK - 1) * subtotal
    return MemoryEstimate(weights, gradients, optimizer, activations, logits, overhead, trainable, shape.total_params)


def estimate_for_run(config: RunConfig, on_gpu: bool | None = None) -> MemoryEstimate:
    """Read the model's config (no weights, nothing written) and estimate; on_gpu defaults to whether a GPU is
    present."""
    from core.models.loader import locate_model, model_config

    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    shape = ModelShape.from_config(model_config(locate_model(config.model_name_or_path)))
    return estimate_memory(shape, config, on_gpu)


def device_memory_bytes() -> tuple[str, float] | None:
    """(name, total bytes) of the first GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return properties.name, float(properties.total_memory)

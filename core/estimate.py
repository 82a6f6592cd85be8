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

import dataclasses
from dataclasses import dataclass

from core.config import RunConfig
from core.methods import get_method
from core.models.loader import locate_model, model_config
from core.stages import get_stage

GIB = 2**30
CONTEXT_BYTES = 0.75 * GIB
SLACK = 1.10


UNBIASED_ATTENTION = ("glm_ocr_text",)
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
    # The MoE generation (GLM-4.5/4.6/4.7: glm4_moe; GLM-4.7-Flash: glm4_moe_lite): the first `dense_layers` blocks
    # have a dense MLP, the others `experts` routed experts (`active_experts` per token) of width `moe_intermediate`
    # fused into 3-D weights, plus `shared_experts` always-on ones and a router.
    experts: int = 0
    active_experts: int = 0
    shared_experts: int = 0
    moe_intermediate: int = 0
    dense_layers: int = 0
    attention_bias: bool = True  # q/k/v biases (GLM-4, GLM-4.5); GLM-4.7-Flash has none
    qk_norm: bool = False  # GLM-4.5's per-head RMSNorm on q and k
    # MLA (GLM-4.7-Flash): q and kv through low-rank projections; the cache keeps kv_lora_rank + qk_rope per token.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope: int = 0
    qk_nope: int = 0
    v_head_dim: int = 0
    # GLM-5's DeepSeek sparse attention: every layer's indexer (wq_b from the q low-rank, wk, a LayerNorm on its keys,
    # weights_proj) scores the tokens each query attends to. Not a LoRA target (top-k passes it no gradient).
    index_heads: int = 0
    index_head_dim: int = 0
    # GLM-V (glm4v, glm4v_moe): the vision tower's and the projector's (merger's) parameters beside the language
    # model, and how many patches one `<|image|>` token merges (the tower runs on the unmerged patches)
    vision_tower: int = 0
    projector: int = 0
    vision_hidden: int = 0
    vision_depth: int = 0
    merge_area: int = 1

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """A GLM-V config: its text_config's shape plus the vision tower counted."""
        if getattr(config, "vision_config", None) is not None:
            from core.models.vision import vision_parameter_counts

            tower, projector = vision_parameter_counts(config)
            seen = config.vision_config
            return dataclasses.replace(
                cls.from_config(config.get_text_config()),
                vision_tower=tower,
                projector=projector,
                vision_hidden=seen.hidden_size,
                vision_depth=seen.depth,
                merge_area=seen.spatial_merge_size**2,
            )
        heads = config.num_attention_heads
        get = lambda key, default=0: getattr(config, key, None) or default  # noqa: E731
        experts = get("n_routed_experts")
        return cls(
            vocab=config.vocab_size,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=get("num_key_value_heads", heads),
            head_dim=get("head_dim", config.hidden_size // heads),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            glm1=getattr(config, "model_type", "") == GLM1_MODEL_TYPE,
            experts=experts,
            active_experts=get("num_experts_per_tok") if experts else 0,
            shared_experts=get("n_shared_experts") if experts else 0,
            moe_intermediate=get("moe_intermediate_size") if experts else 0,
            # GLM-4.5: first_k_dense_replace; GLM-4.7-Flash: mlp_layer_types ("dense" for the leading ones)
            dense_layers=(list(get("mlp_layer_types", [])).count("dense") or get("first_k_dense_replace"))
            if experts
            else 0,
            # GLM-OCR's text attention has no biases, and its config no attention_bias key to say so
            attention_bias=bool(
                getattr(config, "attention_bias", getattr(config, "model_type", "") not in UNBIASED_ATTENTION)
            ),
            qk_norm=bool(getattr(config, "use_qk_norm", False)),
            q_lora_rank=get("q_lora_rank") if get("kv_lora_rank") else 0,
            kv_lora_rank=get("kv_lora_rank"),
            qk_rope=get("qk_rope_head_dim"),
            qk_nope=get("qk_nope_head_dim"),
            v_head_dim=get("v_head_dim"),
            index_heads=get("index_n_heads"),
            index_head_dim=get("index_head_dim") if get("index_n_heads") else 0,
        )

    # the MoE generation, layer by layer -------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def attention_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each attention Linear: GQA (q/k/v/o) or MLA (GLM-4.7-Flash)."""
        if self.kv_lora_rank:
            qk = self.qk_nope + self.qk_rope
            query = (
                {"q_a_proj": (self.hidden, self.q_lora_rank), "q_b_proj": (self.q_lora_rank, self.heads * qk)}
                if self.q_lora_rank
                else {"q_proj": (self.hidden, self.heads * qk)}
            )
            return query | {
                "kv_a_proj_with_mqa": (self.hidden, self.kv_lora_rank + self.qk_rope),
                "kv_b_proj": (self.kv_lora_rank, self.heads * (self.qk_nope + self.v_head_dim)),
                "o_proj": (self.heads * self.v_head_dim, self.hidden),
            }
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden),
        }

    def layer_linears(self, index: int) -> dict[str, tuple[int, int]]:
        """Layer `index`'s Linear layers (in, out) by module name: attention, then the dense MLP or the shared
        experts (the routed experts are fused parameters, see `expert_shapes`)."""
        width = self.intermediate if index < self.dense_layers else self.shared_experts * self.moe_intermediate
        mlp = {"gate_proj": (self.hidden, width), "up_proj": (self.hidden, width), "down_proj": (width, self.hidden)}
        return self.attention_shapes() | (mlp if width else {})

    def expert_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(experts, in, out) of a MoE layer's fused routed-expert weights (peft's target_parameters)."""
        return {
            "experts.gate_up_proj": (self.experts, self.hidden, 2 * self.moe_intermediate),
            "experts.down_proj": (self.experts, self.moe_intermediate, self.hidden),
        }

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    def _moe_layer_params(self, index: int, experts: int) -> int:
        linear = self.layer_linears(index)
        params = sum(i * o for i, o in linear.values())
        if self.kv_lora_rank:
            params += self.kv_lora_rank + (self.q_lora_rank or 0)  # the low-rank projections' norms
        elif self.attention_bias:
            params += linear["q_proj"][1] + 2 * linear["k_proj"][1]
        if self.qk_norm:
            params += 2 * self.head_dim
        if self.index_heads:
            width = self.index_heads * self.index_head_dim
            params += self.q_lora_rank * width + self.hidden * (self.index_head_dim + self.index_heads)
            params += 2 * self.index_head_dim
        if index >= self.dense_layers:
            params += experts * 3 * self.hidden * self.moe_intermediate + self.experts * self.hidden  # + router
        return params + 2 * self.hidden  # two RMSNorms

    @property
    def active_params(self) -> int:
        """Parameters one token passes through: every layer with `active_experts` of the routed experts."""
        if not self.is_moe:
            return self.total_params
        layers = sum(self._moe_layer_params(i, self.active_experts) for i in range(self.layers))
        return self.embedding_params + layers + self.norm_params + self.vision_tower + self.projector

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
        """One layer's Linear weights (a MoE model: the mean over its layers; its experts are not Linear)."""
        if self.is_moe:
            return sum(i * o for n in range(self.layers) for i, o in self.layer_linears(n).values()) // self.layers
        return sum(i * o for i, o in self.linear_shapes.values())

    @property
    def norm_params(self) -> int:
        """One norm's parameters: LayerNorm's weight and bias (ChatGLM-6B), RMSNorm's weight (GLM)."""
        return 2 * self.hidden if self.glm1 else self.hidden

    @property
    def layer_params(self) -> int:
        """One decoder layer's parameters (a MoE model: the mean over its dense and MoE layers)."""
        if self.is_moe:
            return sum(self._moe_layer_params(i, self.experts) for i in range(self.layers)) // self.layers
        if self.glm1:  # a bias on every linear layer, two LayerNorms
            return self.layer_linear_params + sum(o for _, o in self.linear_shapes.values()) + 2 * self.norm_params
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        biases = q + 2 * kv if self.attention_bias else 0  # GLM-4's q/k/v biases (GLM-OCR has none)
        return self.layer_linear_params + biases + 4 * self.hidden  # up to four norms

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.language_params + self.vision_tower + self.projector

    @property
    def language_params(self) -> int:
        if self.is_moe:
            layers = sum(self._moe_layer_params(i, self.experts) for i in range(self.layers))
            return self.embedding_params + layers + self.norm_params
        return self.embedding_params + self.layers * self.layer_params + self.norm_params

    # activations ----------------------------------------------------------------------------------------------
    @property
    def activation_values(self) -> int:
        """Values one token keeps per decoder layer for the backward pass (see the module docstring). A MoE layer
        runs its token through `active_experts` routed and the shared experts: their width stands for the MLP's
        (the mean over the model's dense and MoE layers)."""
        if self.is_moe:
            moe_width = (self.active_experts + self.shared_experts) * self.moe_intermediate
            width = (self.dense_layers * self.intermediate + self.moe_layers * moe_width) / self.layers
            return int(12 * self.hidden + 5 * width + self.experts)  # + the router's scores
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
    method, stage = get_method(config.finetuning_type), get_stage(config.stage)
    compute_bytes = 2 if on_gpu and config.precision != "fp32" else 4
    trainable = method.trainable_params(shape, config)
    vision_activations = 0.0
    if shape.vision_tower:
        trainable, vision_activations = _vision_terms(shape, config, trainable, method.trains_base, compute_bytes)
    weights = method.weight_bytes(shape, config, compute_bytes, trainable)
    preference = stage.preference
    tokens = config.per_device_train_batch_size * config.cutoff_len * stage.rows_per_sample  # a pair: both answers
    if stage.reference and method.trains_base:
        weights += compute_bytes * shape.total_params  # the frozen reference model
    per_token_layer = shape.activation_values * compute_bytes
    layers = method.backprop_layers(shape, config)
    if config.gradient_checkpointing and config.offload_activations:
        activations = tokens * per_token_layer  # the layers' inputs wait in CPU memory: one layer's recomputation
    elif config.gradient_checkpointing:
        activations = tokens * (layers * shape.hidden * compute_bytes + per_token_layer)
    else:
        activations = tokens * layers * per_token_layer
    activations += method.extra_activation_bytes(shape, config, compute_bytes) + vision_activations
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


def _vision_terms(shape: ModelShape, config: RunConfig, trainable: int, trains_base: bool, compute_bytes: int):
    """(trainable parameters, the tower's activations) of a GLM-V run. The frozen tower and projector train no
    weight (a method that trains the whole base trains all but them; one that trains parts adds those the run
    unfreezes). Image tokens are counted in cutoff_len like any token; a tower that trains also keeps its own
    activations for every patch, the image tokens' merge-area times as many, counted here as if the whole cutoff
    were image tokens (the most a sample can hold)."""
    frozen = shape.vision_tower * config.freeze_vision_tower + shape.projector * config.freeze_multi_modal_projector
    unfrozen = shape.vision_tower + shape.projector - frozen
    if trains_base:
        trainable = min(trainable + unfrozen, shape.total_params - frozen)
    if config.freeze_vision_tower:
        return trainable, 0.0
    patches = config.per_device_train_batch_size * config.cutoff_len * shape.merge_area
    return trainable, float(patches * shape.vision_depth * 16 * shape.vision_hidden * compute_bytes)


def estimate_for_run(config: RunConfig, on_gpu: bool | None = None) -> MemoryEstimate:
    """Read the model's config (no weights, nothing written) and estimate; on_gpu defaults to whether a GPU is
    present."""
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

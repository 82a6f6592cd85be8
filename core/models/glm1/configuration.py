"""The configuration of ChatGLM-6B ("GLM v1") as a native transformers model.

The names are transformers' usual ones (`num_hidden_layers`, `intermediate_size`, ...) so that code written for
any causal LM (peft, the trainer, memory estimates) reads them; `core.models.chatglm_v1` maps THUDM's names
(`num_layers`, `inner_hidden_size`, `max_sequence_length`, `layernorm_epsilon`) onto them.

Two values are THUDM's facts, not free choices, and are stored explicitly so that nothing depends on re-deriving
them:
- `residual_scale`: THUDM's GLMBlock scales the residual (the *normalized* input) by sqrt(2 * num_layers), but
  ChatGLMModel builds its blocks without passing num_layers, so the block's default 28 always applies: sqrt(56)
  for every checkpoint, whatever its depth.
- `rotary_base`: 10000, with the inverse frequencies rounded to fp16 (THUDM computes them in fp32 and stores them
  as a half buffer), see `modeling.rotary_inv_freq`.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

MODEL_TYPE = "glm1_workbench"
THUDM_RESIDUAL_LAYERS = 28  # GLMBlock's default num_layers, the one ChatGLM-6B's blocks are built with


class Glm1Config(PreTrainedConfig):
    """ChatGLM-6B: 2D rotary positions, LayerNorm, GeLU (tanh) MLP, fused per-head [q|k|v], prefix-LM attention."""

    model_type = MODEL_TYPE

    vocab_size: int = 130528
    hidden_size: int = 4096
    intermediate_size: int = 16384
    num_hidden_layers: int = 28
    num_attention_heads: int = 32
    layernorm_epsilon: float = 1e-5
    max_position_embeddings: int = 2048
    residual_scale: float = (2 * THUDM_RESIDUAL_LAYERS) ** 0.5
    rotary_base: float = 10000.0
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = True
    # Token ids the model itself reads: positions and the attention mask follow [MASK]/[gMASK] and <sop> (bos).
    bos_token_id: int | None = 130004
    eos_token_id: int | list[int] | None = 130005
    pad_token_id: int | None = 3
    mask_token_id: int | None = 130000
    gmask_token_id: int | None = 130001
    # The first release numbered text tokens after 20,000 image tokens; the "slim" revision has none.
    num_image_tokens: int = 0
    # How many ids the tokenizer has. THUDM pads the embedding past it (130,344 tokens, vocab_size 130,528): the rows
    # from here up are reachable by no token, kept so the logits keep their shape, and never generated.
    tokenizer_vocab_size: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


__all__ = ["Glm1Config", "MODEL_TYPE"]

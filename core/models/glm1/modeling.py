"""ChatGLM-6B ("GLM v1") as a native transformers model: no remote code, transformers 5.x caches and `generate`.

It computes what THUDM's modeling_chatglm.py (hub THUDM/chatglm-6b, final revision) computes, checked against
that code on a tiny checkpoint (tests/test_chatglm_v1.py). What THUDM's code does, and so what this does:
- block: `x = LN1(h); h = x * alpha + attn(x); y = LN2(h); out = y * alpha + mlp(y)`: the residual carries the
  *normalized* input scaled by alpha = config.residual_scale (sqrt(56) for every ChatGLM-6B, see configuration.py);
  LayerNorm with bias; final LayerNorm; `lm_head` tied to the word embeddings.
- attention: `query_key_value` output viewed per head as [q | k | v] (heads interleaved, not all q then all k),
  scores scaled by 1/sqrt(head_dim) (THUDM divides by sqrt(head_dim) * (layer + 1) and multiplies the scores back by
  (layer + 1) in fp32: the same function), softmax, `dense`. Here through SDPA with an explicit boolean mask, since
  the mask is prefix-LM (positions.py), not causal.
- 2D rotary: each head's first half is rotated by the position, the second half by the block position, each with
  the rotate-half (non-interleaved) form over head_dim / 2 dims, inverse frequencies rounded to fp16.
- MLP: `dense_h_to_4h`, GeLU in its tanh form, `dense_4h_to_h` (biases everywhere).

Module names follow THUDM's (`transformer.layers.N.attention.query_key_value`, ...), so checkpoints convert by
renaming nothing and LoRA targets written for THUDM's code (`query_key_value`) still apply. peft's "all-linear"
hits `query_key_value`, `dense`, `dense_h_to_4h` and `dense_4h_to_h` (never `lm_head`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache, DynamicCache, GenerationMixin, PreTrainedModel
from transformers.generation.logits_process import SuppressTokensLogitsProcessor
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils.deprecation import deprecate_kwarg

from core.models.glm1 import positions as glm1_positions
from core.models.glm1.configuration import Glm1Config

LINEAR_MODULES = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


def rotary_inv_freq(dim: int, base: float, device=None) -> torch.Tensor:
    """THUDM's inverse frequencies: computed in fp32, stored as fp16, used at that precision (here in fp32)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))
    return inv_freq.half().float()


def rotary_cos_sin(position_ids: torch.Tensor, dim: int, base: float, dtype: torch.dtype):
    """cos, sin [batch, 1, seq, dim] for positions [batch, seq], as THUDM: cat(freqs, freqs) (rotate-half form)."""
    freqs = position_ids[..., None].float() * rotary_inv_freq(dim, base, position_ids.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, None].to(dtype), emb.sin()[:, None].to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_2d_rotary(q: torch.Tensor, k: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k [batch, heads, seq, head_dim]: first halves by position, second halves by block position."""
    (cos_p, sin_p), (cos_b, sin_b) = rotary
    q1, q2 = q.chunk(2, dim=-1)
    k1, k2 = k.chunk(2, dim=-1)
    q1, k1 = q1 * cos_p + rotate_half(q1) * sin_p, k1 * cos_p + rotate_half(k1) * sin_p
    q2, k2 = q2 * cos_b + rotate_half(q2) * sin_b, k2 * cos_b + rotate_half(k2) * sin_b
    return torch.cat([q1, q2], dim=-1), torch.cat([k1, k2], dim=-1)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """THUDM's gelu_impl (OpenAI's tanh approximation), the same as torch's approximate='tanh'."""
    return F.gelu(x, approximate="tanh")


class Glm1Attention(nn.Module):
    def __init__(self, config: Glm1Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        rotary,
        cache: Cache | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """With `use_cache` the new keys and values are appended to `cache`; without it the cache is only read (a
        P-tuning prefix while training): the layer then computes the same thing each time it runs, which is what
        lets gradient checkpointing replay it."""
        batch, length, _ = hidden_states.shape
        mixed = self.query_key_value(hidden_states).view(batch, length, self.num_heads, 3 * self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in mixed.split(self.head_dim, dim=-1))
        query, key = apply_2d_rotary(query, key, rotary)
        if cache is not None and use_cache:
            key, value = cache.update(key, value, self.layer_idx)
        elif cache is not None and cache.get_seq_length(self.layer_idx):
            past = cache.layers[self.layer_idx]
            key, value = torch.cat([past.keys, key], dim=-2), torch.cat([past.values, value], dim=-2)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=1.0 / math.sqrt(self.head_dim)
        )
        return self.dense(context.transpose(1, 2).reshape(batch, length, -1))


class Glm1MLP(nn.Module):
    def __init__(self, config: Glm1Config):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(gelu_tanh(self.dense_h_to_4h(hidden_states)))


class Glm1Block(GradientCheckpointingLayer):
    # Under gradient checkpointing transformers sets use_cache=False, so the block only reads the cache (see
    # Glm1Attention.forward): it may keep it, and a P-tuning prefix survives the replay instead of being dropped.
    _can_checkpoint_with_cache = True

    def __init__(self, config: Glm1Config, layer_idx: int):
        super().__init__()
        self.alpha = config.residual_scale
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.attention = Glm1Attention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mlp = Glm1MLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        rotary,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor:
        attention_input = self.input_layernorm(hidden_states)
        attention = self.attention(attention_input, attention_mask, rotary, cache, use_cache)
        hidden_states = attention_input * self.alpha + attention
        mlp_input = self.post_attention_layernorm(hidden_states)
        return mlp_input * self.alpha + self.mlp(mlp_input)


class Glm1PreTrainedModel(PreTrainedModel):
    config: Glm1Config
    config_class = Glm1Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Glm1Block"]
    _supports_sdpa = True  # attention always runs through SDPA (with an explicit mask)


class Glm1Model(Glm1PreTrainedModel):
    def __init__(self, config: Glm1Config):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Glm1Block(config, i) for i in range(config.num_hidden_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """`attention_mask`: a 2D padding mask (1 = token) over the cache and the new tokens, or a ready boolean
        4D mask (True = may attend). `position_ids`: [2, batch, seq]; computed from `input_ids` when absent."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None and not (self.gradient_checkpointing and self.training):
            cache = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        batch, length = inputs_embeds.shape[:2]

        padding_mask = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        if position_ids is not None and position_ids.dim() != 3:
            raise ValueError(
                "GLM v1 takes 2D positions, position_ids [2, batch, seq] (positions and block positions), got "
                f"{tuple(position_ids.shape)}; padding-free packing, which passes 1D positions, cannot express them"
            )
        if position_ids is None:
            position_ids = self._positions(input_ids, padding_mask, past_length)
        if attention_mask is None or attention_mask.dim() == 2:
            if input_ids is None:
                raise ValueError(
                    "GLM v1's prefix-LM mask comes from the token ids (<sop>): with inputs_embeds, pass "
                    "a boolean 4D attention_mask [batch, 1, seq, past + seq] (True = may attend)"
                )
            mask = glm1_positions.attention_mask(
                input_ids, self.config, past_length, padding_mask, length, inputs_embeds.device
            )
        else:
            mask = attention_mask.to(device=inputs_embeds.device, dtype=torch.bool)
        rotary_dim = self.config.head_dim // 2
        rotary = tuple(
            rotary_cos_sin(position_ids[row], rotary_dim, self.config.rotary_base, inputs_embeds.dtype)
            for row in (0, 1)
        )

        hidden_states = inputs_embeds
        all_hidden_states = [] if (output_hidden_states or self.config.output_hidden_states) else None
        for layer in self.layers:
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
            hidden_states = layer(hidden_states, attention_mask=mask, rotary=rotary, cache=cache, use_cache=use_cache)
        hidden_states = self.final_layernorm(hidden_states)
        if all_hidden_states is not None:
            all_hidden_states.append(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden_states) if all_hidden_states else None,
        )

    def _positions(self, input_ids, padding_mask, past_length: int) -> torch.Tensor:
        """Positions for a chunk that starts a sequence (no cache, or a P-tuning prefix before its prompt)."""
        if input_ids is None:
            raise ValueError(
                "GLM v1 positions come from the token ids ([gMASK], <sop>): with inputs_embeds, pass "
                "position_ids [2, batch, seq]"
            )
        if past_length and self.config.bos_token_id not in input_ids:
            raise ValueError(
                "GLM v1 cannot tell the positions of tokens that continue a cache from the new tokens "
                "alone: pass position_ids [2, batch, seq] (generate does)"
            )
        chunk_padding = padding_mask[:, -input_ids.shape[1] :] if padding_mask is not None else None
        return glm1_positions.position_ids(input_ids, self.config, chunk_padding)


class Glm1ForCausalLM(Glm1PreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "transformer.word_embeddings.weight"}

    def __init__(self, config: Glm1Config):
        super().__init__(config)
        self.transformer = Glm1Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:  # shifted inside, as THUDM does: position t predicts token t + 1
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )

    def _get_logits_processor(self, generation_config, *args, **kwargs):
        """generate's processors, first of all one that never picks an id of the embedding's padding (THUDM's
        checkpoints have 184 rows no token reaches; an untrained row must not be sampled)."""
        processors = super()._get_logits_processor(generation_config, *args, **kwargs)
        real = self.config.tokenizer_vocab_size
        if real is not None and real < self.config.vocab_size:
            device = kwargs.get("device") or self.device
            processors.insert(
                0, SuppressTokensLogitsProcessor(list(range(real, self.config.vocab_size)), device=device)
            )
        return processors

    def _prepare_position_ids_for_generation(self, inputs_tensor: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        """generate's starting positions: GLM v1's 2D ones, from the prompt's ids and padding (the base class would
        count 0, 1, 2, ... from the mask). A P-tuning prefix in the mask has no ids and no positions."""
        input_ids = model_kwargs.get("input_ids", inputs_tensor)
        attention_mask = model_kwargs.get("attention_mask")
        padding = attention_mask[:, -input_ids.shape[1] :] if attention_mask is not None else None
        return glm1_positions.position_ids(input_ids, self.config, padding)

    def _update_model_kwargs_for_generation(
        self, outputs, model_kwargs: dict, is_encoder_decoder: bool = False, num_new_tokens: int = 1
    ) -> dict:
        """New tokens' positions grow THUDM's way: the position stays the mask's, the block position counts on (the
        base class would add one to both rows)."""
        given = model_kwargs.pop("position_ids", None)
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder, num_new_tokens
        )
        if given is not None:
            new = given[..., -1:].repeat(1, 1, num_new_tokens)
            new[1] += torch.arange(1, num_new_tokens + 1, device=given.device)
            model_kwargs["position_ids"] = torch.cat([given, new], dim=-1)
        return model_kwargs


__all__ = ["Glm1PreTrainedModel", "Glm1Model", "Glm1ForCausalLM", "LINEAR_MODULES"]

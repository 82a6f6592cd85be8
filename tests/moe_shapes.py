"""Tiny MoE shapes shared by the MoE tests (training and the memory estimate)."""

# GLM-4.7-Flash's layout in miniature: MLA (compressed q and kv, a rotary part of each head), first layer dense,
# routed experts with a shared one, sigmoid router.
LITE_ARCHITECTURE = dict(
    hidden_size=128,
    intermediate_size=256,
    moe_intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_key_value_heads=2,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    # Every width a multiple of 64, as bitsandbytes' 4-bit CPU kernels need (GLM-4.7-Flash: kv 512, q 768, rope
    # 64, nope 192, v 256, 20 heads).
    kv_lora_rank=64,
    q_lora_rank=64,
    qk_rope_head_dim=64,
    qk_nope_head_dim=64,
    v_head_dim=64,
    max_position_embeddings=4096,
    initializer_range=0.1,
)

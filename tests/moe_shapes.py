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


def write_tiny_model(folder, config_class, model_class, shape: dict, template: str) -> str:
    """A tiny random model of `model_class` with the MoE demo's tokenizer carrying `template`'s chat template
    (template: auto picks it back), saved into `folder`."""
    import torch

    from core.data.template import chat_template_jinja
    from core.models.demo import DEMOS, STOP_TOKENS, build_tokenizer

    tokenizer = build_tokenizer(DEMOS["demo-moe"])
    tokenizer.chat_template = chat_template_jinja(template)
    stop = [tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]
    config = config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=stop, **shape)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = model_class(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)

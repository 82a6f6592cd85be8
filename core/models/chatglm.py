"""Convert THUDM remote-code checkpoints (ChatGLM2-6B, ChatGLM3-6B, glm-4-9b-chat; `model_type: chatglm`) into
transformers' native `GlmForCausalLM`, once, on disk, so no stale remote code ever runs.

Their remote code breaks on transformers >= 4.45/4.49; the native class computes the same function:
- config: layers, hidden, ffn, heads, `multi_query_group_num` -> kv heads, `kv_channels` -> head_dim,
  `padded_vocab_size`, eps, qkv bias, partial rotary 0.5 (interleaved, like THUDM's), and rope: theta
  10000 * rope_ratio (chatglm3-6b-32k, glm-4-9b-chat) or, for ChatGLM2-6B-32k, whose code divides positions by
  rope_ratio, linear scaling with theta 10000. Which one is read from the checkpoint's own modeling file, else
  from its name; the report says which.
- weights: the fused `query_key_value` rows are [all query heads | all kv groups' keys | all values]
  (bias likewise); `dense_h_to_4h` is `gate_up_proj` unchanged (gate half first); the rest is renaming.
- tokenizer: ChatGLM2/3 ship a SentencePiece model with special tokens appended after its vocabulary
  (`[MASK] [gMASK] [sMASK] sop eop`, ChatGLM3 also `<|system|> <|user|> <|assistant|> <|observation|>`);
  glm-4-9b-chat ships tiktoken-style ranks with its specials from `<|endoftext|>` on. Both become a fast
  tokenizer (SentencePiece BPE rebuilt in `tokenizers`; transformers' TikTokenConverter) with the right chat
  template and stop tokens.
ChatGLM-6B (v1) is another architecture (2D positions, GeLU, prefix-LM attention): it converts to the workbench's
own native class instead (core.models.chatglm_v1, core.models.glm1); the functions here hand it over, so every
THUDM checkpoint is converted the same way, once, through `ensure_converted`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from core.data.template import chat_template_jinja
from core.errors import ModelError
from core.files import CONVERTED_KIND, TargetNotFreeError, output_kind, refusal, staged_dir
from core.models import chatglm_v1
from core.resources import home_dir

log = logging.getLogger("glm_workbench")

CHATGLM_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
GLM4_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", *ROLE_TOKENS]
GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
VARIANT_TEMPLATE = {"chatglm-6b": "chatglm", "chatglm2": "chatglm2", "chatglm3": "chatglm3", "glm4-chat": "glm4"}
V1 = "chatglm-6b"  # the variant name of ChatGLM-6B (v1), converted by core.models.chatglm_v1


@dataclass
class ConversionReport:
    source: str
    target: str
    variant: str
    template: str
    rope: str

    def __str__(self) -> str:
        return (
            f"converted {self.variant} checkpoint {self.source} -> {self.target} (GlmForCausalLM); "
            f"template {self.template}; rope: {self.rope}"
        )


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def is_chatglm_checkpoint(folder: str | Path) -> bool:
    return read_config(folder).get("model_type") == "chatglm"


def is_chatglm_v1(config: dict) -> bool:
    """ChatGLM-6B (v1) rather than ChatGLM2/3 or glm-4-9b-chat: 2D positions, or no `padded_vocab_size`."""
    return bool(config.get("position_encoding_2d")) or "padded_vocab_size" not in config


def _is_tiktoken_file(path: Path) -> bool:
    try:
        first = path.open("rb").readline().split()
        return len(first) == 2 and first[1].isdigit() and base64.b64decode(first[0], validate=True) is not None
    except (OSError, ValueError):
        return False


def detect_variant(folder: str | Path, config: dict) -> str:
    folder = Path(folder)
    if is_chatglm_v1(config):
        return V1
    if _is_tiktoken_file(folder / "tokenizer.model"):
        return "glm4-chat"
    code = folder / "tokenization_chatglm.py"
    if code.is_file():
        return "chatglm3" if "<|observation|>" in code.read_text(encoding="utf-8", errors="replace") else "chatglm2"
    return "chatglm3" if "chatglm3" in str(config.get("_name_or_path", folder)).lower() else "chatglm2"


def rope_parameters(folder: str | Path, config: dict, variant: str) -> tuple[dict, str]:
    """Native rope parameters and a sentence saying which scheme was found and how."""
    ratio = float(config.get("rope_ratio", 1) or 1)
    base = {"partial_rotary_factor": 0.5}
    if ratio == 1:
        return {**base, "rope_type": "default", "rope_theta": 10000.0}, "theta 10000 (no rope_ratio)"
    code_path = Path(folder) / "modeling_chatglm.py"
    code = code_path.read_text(encoding="utf-8", errors="replace") if code_path.is_file() else ""
    if re.search(r"/\s*self\.rope_ratio", code):
        linear, how = True, "modeling_chatglm.py divides positions by rope_ratio"
    elif re.search(r"base\s*\*\s*self\.rope_ratio|rope_ratio\s*\*\s*base", code):
        linear, how = False, "modeling_chatglm.py multiplies the base by rope_ratio"
    else:
        name = str(config.get("_name_or_path", folder)).lower()
        linear = variant == "chatglm2"
        how = f"no modeling file to read; by the model family ({variant}, {name})"
    if linear:
        return (
            {**base, "rope_type": "linear", "factor": ratio, "rope_theta": 10000.0},
            f"linear scaling by {ratio:g}, theta 10000 ({how})",
        )
    return {**base, "rope_type": "default", "rope_theta": 10000.0 * ratio}, f"theta {10000 * ratio:g} ({how})"


def native_config(config: dict, rope: dict, special_ids: dict[str, int], variant: str):
    from transformers import GlmConfig

    heads = config["num_attention_heads"]
    kv_heads = config["multi_query_group_num"] if config.get("multi_query_attention") else heads
    if variant == "glm4-chat":
        eos = [special_ids["<|endoftext|>"], special_ids["<|user|>"], special_ids["<|observation|>"]]
        pad = special_ids["<|endoftext|>"]
    else:
        eos = [2] + ([special_ids["<|user|>"], special_ids["<|observation|>"]] if variant == "chatglm3" else [])
        pad = 0
    return GlmConfig(
        vocab_size=config["padded_vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["ffn_hidden_size"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=config.get("kv_channels") or config["hidden_size"] // heads,
        rms_norm_eps=config.get("layernorm_epsilon", 1e-5),
        attention_bias=bool(config.get("add_qkv_bias", True)),
        max_position_embeddings=config.get("seq_length", 8192),
        rope_parameters=rope,
        tie_word_embeddings=False,
        pad_token_id=pad,
        eos_token_id=eos,
    )


def load_thudm_weights(folder: str | Path) -> dict:
    """Every tensor of the checkpoint: safetensors or PyTorch .bin files, sharded or not."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    state: dict = {}
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ModelError("model.no_weights", folder=str(folder))
    for file in files:
        part = (
            load_file(str(file))
            if file.suffix == ".safetensors"
            else torch.load(file, map_location="cpu", weights_only=True)
        )
        state.update(part)
    return state


LAYER_RENAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}


def convert_state_dict(state: dict, config) -> dict:
    """THUDM names -> GlmForCausalLM names; the fused qkv split into q, k and v."""
    q_size = config.num_attention_heads * config.head_dim
    kv_size = config.num_key_value_heads * config.head_dim
    out = {
        "model.embed_tokens.weight": state["transformer.embedding.word_embeddings.weight"],
        "model.norm.weight": state["transformer.encoder.final_layernorm.weight"],
        "lm_head.weight": state["transformer.output_layer.weight"],
    }
    for layer in range(config.num_hidden_layers):
        old, new = f"transformer.encoder.layers.{layer}.", f"model.layers.{layer}."
        for source, target in LAYER_RENAMES.items():
            out[new + target] = state[old + source]
        for kind in ("weight", "bias"):
            fused = state.get(old + f"self_attention.query_key_value.{kind}")
            if fused is None:
                continue
            q, k, v = fused.split([q_size, kv_size, kv_size], dim=0)
            out[new + f"self_attn.q_proj.{kind}"] = q.clone()
            out[new + f"self_attn.k_proj.{kind}"] = k.clone()
            out[new + f"self_attn.v_proj.{kind}"] = v.clone()
    return out


def sentencepiece_to_fast(path: Path):
    """ChatGLM2/3's SentencePiece BPE model as a `tokenizers` BPE with the same options: byte fallback, the
    dummy prefix '▁' at the start of every encoded text, spaces as '▁', no other normalization."""
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extracted = SentencePieceExtractor(str(path)).extract(None)
    core = Tokenizer(BPE(extracted["vocab"], extracted["merges"], unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return core


def convert_tokenizer(folder: str | Path, variant: str):
    """A fast tokenizer with ids identical to THUDM's, special tokens at their original ids."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if variant == V1:
        return chatglm_v1.convert_tokenizer(folder)
    path = Path(folder) / "tokenizer.model"
    if not path.is_file():
        raise ModelError("model.no_tokenizer_model", folder=str(folder))
    template = VARIANT_TEMPLATE[variant]
    if variant == "glm4-chat":
        core = TikTokenConverter(vocab_file=str(path), pattern=GLM4_PATTERN).converted()
        core.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GLM4_SPECIALS])
        return PreTrainedTokenizerFast(
            tokenizer_object=core,
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            padding_side="left",
            chat_template=chat_template_jinja(template),
            additional_special_tokens=GLM4_SPECIALS[1:],
        )
    core = sentencepiece_to_fast(path)
    specials = CHATGLM_SPECIALS + (ROLE_TOKENS if variant == "chatglm3" else [])
    core.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        padding_side="left",
        chat_template=chat_template_jinja(template),
        additional_special_tokens=specials,
    )


def convert_chatglm(source: str | Path, target: str | Path, overwrite: bool = False):
    """Convert a THUDM checkpoint folder into a native model folder, written into a staging folder renamed into
    place. A non-empty target is refused; with `overwrite`, only an earlier conversion of ours is replaced.
    ChatGLM-6B (v1) goes to core.models.chatglm_v1 (the workbench's native Glm1ForCausalLM)."""
    from transformers import GlmForCausalLM

    source, target = Path(source), Path(target)
    config = read_config(source)
    if config.get("model_type") != "chatglm":
        raise ModelError("model.not_thudm", folder=str(source), model_type=repr(config.get("model_type")))
    if is_chatglm_v1(config):
        return chatglm_v1.convert_chatglm_v1(source, target, overwrite=overwrite)
    variant = detect_variant(source, config)
    rope, rope_note = rope_parameters(source, config, variant)
    tokenizer = convert_tokenizer(source, variant)
    special_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    glm_config = native_config(config, rope, special_ids, variant)
    state = convert_state_dict(load_thudm_weights(source), glm_config)
    import torch

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(config.get("torch_dtype")), torch.float32)
    with torch.device("meta"):
        model = GlmForCausalLM(glm_config)
    model.load_state_dict(state, assign=True, strict=True)
    model.to(dtype)
    target.parent.mkdir(parents=True, exist_ok=True)
    report = ConversionReport(str(source), str(target), variant, VARIANT_TEMPLATE[variant], rope_note)
    try:
        with staged_dir(target, kind=CONVERTED_KIND, replace="ours" if overwrite else "never") as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            (folder / "glm_workbench_conversion.json").write_text(json.dumps(report.__dict__, indent=2))
    except TargetNotFreeError as exc:
        raise refusal(exc) from None
    log.info("%s", report)
    return report


def conversion_target(source: str | Path) -> Path:
    """Where a checkpoint is converted to on first use: the workbench home, keyed by path and weights' mtime."""
    source = Path(source).resolve()
    stamp = max((p.stat().st_mtime for p in source.iterdir() if p.is_file()), default=0)
    key = hashlib.sha1(f"{source}:{stamp}".encode()).hexdigest()[:10]
    return home_dir() / "converted" / f"{source.name}-{key}"


def ensure_converted(source: str | Path) -> Path:
    """The converted copy of `source`, converting it first if needed: once, under a file lock, so that two
    processes (or two threads) asking at once convert it once and never remove each other's work."""
    import fcntl

    target = conversion_target(source)
    if output_kind(target) == CONVERTED_KIND:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if output_kind(target) != CONVERTED_KIND:
            log.info("converting THUDM checkpoint %s to the native GLM format (once) ...", source)
            convert_chatglm(source, target)
    return target


def shape_config(folder: str | Path):
    """The native config of a THUDM checkpoint, from its config.json alone (for the memory estimate)."""
    config = read_config(folder)
    variant = detect_variant(folder, config)
    if variant == V1:
        return chatglm_v1.shape_config(folder)
    rope, _ = rope_parameters(folder, config, variant)
    ids = {"<|endoftext|>": 0, "<|user|>": 0, "<|observation|>": 0}
    return native_config(config, rope, ids, variant)

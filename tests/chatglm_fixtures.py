"""Test support: write tiny THUDM remote-code checkpoints (ChatGLM2-6B, ChatGLM3-6B, glm-4-9b-chat).

THUDM's ``model_type: chatglm`` layout is implemented here independently of the workbench's converter,
from a small random native ``GlmForCausalLM``, so tests can check the conversion back to the native
model (weights, logits, tokenizer ids) without downloading anything.

Not a test module: import the helpers from tests.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from transformers import GlmForCausalLM

REPO = Path(__file__).resolve().parents[1]
CORPUS_FILES = [REPO / "assets" / "demo_model" / "corpus.txt"]
DATASET_DIR = REPO / "assets" / "datasets"

VARIANTS = ("chatglm2", "chatglm3", "glm4-chat")

GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHATGLM2_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
CHATGLM3_SPECIALS = CHATGLM2_SPECIALS + ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
GLM4_SPECIALS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
]

NAME_OR_PATH = {
    "chatglm2": "chatglm2-6b",
    "chatglm3": "chatglm3-6b",
    "glm4-chat": "glm-4-9b-chat",
}

# Tiny model shape (shared by the native model and the THUDM config).
HIDDEN = 64
FFN = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
EPS = 1e-5
MAX_POS = 256

SAMPLE_TEXTS: list[str] = [
    "你好，我是小智。\n今天气温 23 度。",
    "\n你好",
    "  two  spaces and\ttab",
    "GLM-4 的 9B 模型",
    "Hello, world! 12345678 apples cost $3.50.",
    "混合 mixed 文本 text，with 标点！？ and line\nbreaks\n\n",
    "",
]


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def special_tokens(variant: str) -> list[str]:
    """THUDM's special tokens for ``variant``, in id order (appended after the ordinary vocabulary)."""
    _check_variant(variant)
    return list({"chatglm2": CHATGLM2_SPECIALS, "chatglm3": CHATGLM3_SPECIALS, "glm4-chat": GLM4_SPECIALS}[variant])


# ---------------------------------------------------------------------------------------------- text


def _strings(obj) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for item in obj:
            yield from _strings(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _strings(item)


@functools.lru_cache(maxsize=1)
def training_texts() -> tuple[str, ...]:
    """The corpus plus every string value of the bundled datasets (Chinese and English)."""
    texts = [p.read_text(encoding="utf-8") for p in CORPUS_FILES]
    for path in sorted(DATASET_DIR.glob("*.json*")):
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            objs = [json.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            objs = [json.loads(raw)]
        for obj in objs:
            texts.extend(_strings(obj))
    return tuple(t for t in texts if t)


def _training_lines() -> list[str]:
    return [line for text in training_texts() for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ SentencePiece


@functools.lru_cache(maxsize=1)
def _sentencepiece_bytes() -> bytes:
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_lines()),
        model_writer=writer,
        model_type="bpe",
        vocab_size=2000,
        character_coverage=0.9995,
        byte_fallback=True,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        max_sentence_length=1 << 16,
        num_threads=1,
        minloglevel=2,
    )
    return writer.getvalue()


def train_sentencepiece(folder: Path) -> Path:
    """Write ChatGLM2/3's SentencePiece BPE ``tokenizer.model`` into ``folder`` (trained once per process)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.model"
    path.write_bytes(_sentencepiece_bytes())
    return path


# ------------------------------------------------------------------------------------------ tiktoken


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (as used by byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@functools.lru_cache(maxsize=1)
def _tiktoken_tokens() -> tuple[bytes, ...]:
    """Raw token bytes in rank order, from a byte-level BPE trained with ``tokenizers``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(training_texts()), trainer=trainer)
    vocab = tok.get_vocab()
    decode = {c: b for b, c in _bytes_to_unicode().items()}
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise AssertionError("byte-level BPE ids are not contiguous")
    tokens = tuple(bytes(decode[c] for c in piece) for piece, _ in by_id)
    if len(set(tokens)) != len(tokens) or not {bytes([b]) for b in range(256)} <= set(tokens):
        raise AssertionError("byte-level BPE vocabulary does not map to distinct bytes covering all 256 bytes")
    return tokens


def write_tiktoken_file(folder: Path) -> tuple[Path, int]:
    """Write glm-4's tiktoken ``tokenizer.model`` (``base64(bytes) rank`` lines) into ``folder``.

    Returns the path and ``n``, the number of ordinary tokens (ranks ``0..n-1``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = _tiktoken_tokens()
    path = folder / "tokenizer.model"
    path.write_text(
        "".join(f"{base64.b64encode(tok).decode('ascii')} {rank}\n" for rank, tok in enumerate(tokens)),
        encoding="ascii",
    )
    return path, len(tokens)


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a ``base64(bytes) rank`` file the way THUDM's ChatGLM4Tokenizer does."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


# ------------------------------------------------------------------------------------ reference ids


def reference_ids(folder: Path, variant: str, text: str) -> list[int]:
    """Ids THUDM's own tokenizer gives ordinary ``text`` (no special tokens) for ``variant``."""
    _check_variant(variant)
    model_file = Path(folder) / "tokenizer.model"
    if variant == "glm4-chat":
        return _tiktoken_encoding(str(model_file), model_file.stat().st_mtime_ns).encode(text, disallowed_special=())
    return _sentencepiece_processor(str(model_file), model_file.stat().st_mtime_ns).encode(text)


@functools.lru_cache(maxsize=8)
def _sentencepiece_processor(model_file: str, _mtime: int):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=model_file)


@functools.lru_cache(maxsize=8)
def _tiktoken_encoding(model_file: str, _mtime: int):
    import tiktoken

    return tiktoken.Encoding(
        name="glm4", pat_str=GLM4_PATTERN, mergeable_ranks=load_tiktoken_ranks(Path(model_file)), special_tokens={}
    )


# ------------------------------------------------------------------------------------------- models


def tiny_native_model(
    variant: str,
    vocab_size: int,
    rope_ratio: float = 1.0,
    seed: int = 0,
    *,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
) -> GlmForCausalLM:
    """A small random fp32 ``GlmForCausalLM`` in eval mode, the native twin of a THUDM checkpoint.

    Every parameter is randomised (norm weights around 1, non-zero biases) so that any mix-up of tensors
    in a conversion changes the logits. ``eos_token_id``/``pad_token_id`` default to ChatGLM2/3's 2/0;
    glm-4 has no fixed default (its ids depend on the tokenizer size), so pass them for ``glm4-chat``.
    """
    import torch
    from transformers import GlmConfig, GlmForCausalLM

    _check_variant(variant)
    if variant != "glm4-chat":
        eos_token_id = 2 if eos_token_id is None else eos_token_id
        pad_token_id = 0 if pad_token_id is None else pad_token_id
    config = GlmConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        attention_bias=True,
        rms_norm_eps=EPS,
        tie_word_embeddings=False,
        max_position_embeddings=MAX_POS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0 * rope_ratio, "partial_rotary_factor": 0.5},
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GlmForCausalLM(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.copy_(1.0 + 0.1 * torch.randn_like(param))
                elif name.endswith(".bias"):
                    param.copy_(0.1 * torch.randn_like(param))
                else:
                    param.normal_(0.0, 0.05)
    return model.float().eval()


def thudm_state_dict(model: GlmForCausalLM) -> dict:
    """The native model's weights renamed/fused into THUDM's ``transformer.*`` layout (fp32, contiguous)."""
    import torch

    sd = {k: v.detach() for k, v in model.state_dict().items()}
    head_dim = model.config.head_dim
    rotary_dim = head_dim // 2
    out = {"transformer.embedding.word_embeddings.weight": sd["model.embed_tokens.weight"]}
    for i in range(model.config.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        out[dst + "input_layernorm.weight"] = sd[src + "input_layernorm.weight"]
        for kind in ("weight", "bias"):
            out[dst + f"self_attention.query_key_value.{kind}"] = torch.cat(
                [sd[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0
            )
        out[dst + "self_attention.dense.weight"] = sd[src + "self_attn.o_proj.weight"]
        out[dst + "post_attention_layernorm.weight"] = sd[src + "post_attention_layernorm.weight"]
        out[dst + "mlp.dense_h_to_4h.weight"] = sd[src + "mlp.gate_up_proj.weight"]
        out[dst + "mlp.dense_4h_to_h.weight"] = sd[src + "mlp.down_proj.weight"]
    out["transformer.encoder.final_layernorm.weight"] = sd["model.norm.weight"]
    out["transformer.output_layer.weight"] = sd["lm_head.weight"]
    out["transformer.rotary_pos_emb.inv_freq"] = 1.0 / (
        10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)
    )
    return {k: v.to(torch.float32).contiguous().clone() for k, v in out.items()}


def thudm_config(
    variant: str, padded_vocab_size: int, eos_token_id: int | list[int], pad_token_id: int, rope_ratio: float = 1.0
) -> dict:
    """THUDM's ``config.json`` for the tiny model."""
    _check_variant(variant)
    name = NAME_OR_PATH[variant]
    if variant == "chatglm3" and rope_ratio != 1.0:
        name = "chatglm3-6b-32k"
    config = {
        "_name_or_path": name,
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification",
        },
        "num_layers": LAYERS,
        "hidden_size": HIDDEN,
        "ffn_hidden_size": FFN,
        "num_attention_heads": HEADS,
        "kv_channels": HEAD_DIM,
        "multi_query_attention": True,
        "multi_query_group_num": KV_HEADS,
        "padded_vocab_size": padded_vocab_size,
        "layernorm_epsilon": EPS,
        "add_qkv_bias": True,
        "add_bias_linear": False,
        "rmsnorm": True,
        "apply_residual_connection_post_layernorm": False,
        "post_layer_norm": True,
        "original_rope": True,
        "seq_length": MAX_POS,
        "torch_dtype": "float32",
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "tie_word_embeddings": False,
        "bias_dropout_fusion": True,
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
        "apply_query_key_layer_scaling": True,
        "attention_softmax_in_fp32": True,
        "fp32_residual_connection": False,
        "use_cache": True,
        "transformers_version": "4.30.2",
    }
    if rope_ratio != 1.0:
        config["rope_ratio"] = float(rope_ratio)
    return config


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_thudm_checkpoint(folder: Path, variant: str, rope_ratio: float = 1.0) -> GlmForCausalLM:
    """Write a tiny THUDM checkpoint (config, weights, tokenizer files) for ``variant`` into ``folder``.

    ``variant`` is ``"chatglm2"``, ``"chatglm3"`` or ``"glm4-chat"``. Returns the native model whose weights
    were written, so a test can compare its logits with the converter's output.
    """
    import torch

    _check_variant(variant)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = special_tokens(variant)

    if variant == "glm4-chat":
        _, n = write_tiktoken_file(folder)
        ids = {tok: n + i for i, tok in enumerate(specials)}
        eos_token_id: int | list[int] = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
        pad_token_id = ids["<|endoftext|>"]
        tokenizer_config = {
            "tokenizer_class": "ChatGLM4Tokenizer",
            "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]},
            "padding_side": "left",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        }
    else:
        import sentencepiece as spm

        model_file = train_sentencepiece(folder)
        n = spm.SentencePieceProcessor(model_file=str(model_file)).vocab_size()
        eos_token_id, pad_token_id = 2, 0
        tokenizer_config = {
            "tokenizer_class": "ChatGLMTokenizer",
            "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
            "padding_side": "left",
            "remove_space": False,
            "do_lower_case": False,
        }

    padded_vocab_size = int(math.ceil((n + len(specials)) / 64) * 64)
    model = tiny_native_model(
        variant, padded_vocab_size, rope_ratio=rope_ratio, eos_token_id=eos_token_id, pad_token_id=pad_token_id
    )

    _write_json(
        folder / "config.json", thudm_config(variant, padded_vocab_size, eos_token_id, pad_token_id, rope_ratio)
    )
    _write_json(folder / "tokenizer_config.json", tokenizer_config)
    (folder / "tokenization_chatglm.py").write_text(
        f"# Stand-in for THUDM's {NAME_OR_PATH[variant]} tokenizer code (never executed).\n"
        f"SPECIAL_TOKENS = {json.dumps(specials, ensure_ascii=False)}\n",
        encoding="utf-8",
    )

    state_dict = thudm_state_dict(model)
    if variant == "glm4-chat":
        from safetensors.torch import save_file

        save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state_dict, folder / "pytorch_model.bin")
    return model

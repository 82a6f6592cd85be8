"""ChatGLM-6B's tokenizer (THUDM's ChatGLMTokenizer over ice_text.model) rebuilt as a `tokenizers` fast tokenizer
with the same ids.

What THUDM's tokenizer does, and where each step lives here:
1. text -> text before SentencePiece: "\\n" -> "<n>", "\\t" -> "<|tab|>", then runs of spaces replaced from the
   longest (80) down to 2 by "<|blank_N|>" (so 85 spaces are <|blank_80|><|blank_5|>, 81 are <|blank_80|> and a
   space). -> the first normalizers, literal replacements in THUDM's order.
2. SentencePiece with the model's own settings: NFKC-style charsmap, extra whitespace removed (leading and
   trailing spaces dropped, inner runs collapsed), spaces as "▁", a dummy "▁" in front of every piece of text
   encoded on its own. -> Precompiled charsmap, the whitespace rules, Metaspace (prepended to every chunk between
   special tokens, as THUDM's slow tokenizer encodes each such chunk separately).
3. user-defined pieces (<n>, <|tab|>, <|blank_N|>) are emitted whole, never merged or split. -> a Split
   pre-tokenizer isolating them (BPE then emits a whole word that is a piece as is).
4. ids = SentencePiece ids + num_image_tokens (20,000 in the first release, 0 in the "slim" one). -> the vocabulary
   starts with `<image_0>`..`<image_N-1>` placeholders that no text can produce.
5. `tokenizer(text)` appends [gMASK] <sop> (and `tokenizer(a, b)`: a [gMASK] <sop> b <eop>). -> the post-processor.
Decoding undoes 1 after SentencePiece's decoding, as THUDM's does.

Known differences (none reachable from chat or training text): THUDM's slow tokenizer splits only its registered
special tokens out of raw text (<sop>, <eop>, [MASK], <unk>, <pad>) and strips the whitespace around them; here
every control token (also [gMASK], [sMASK], ...) written literally in text is that token, whitespace kept, which is
what a chat template needs.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import ConversionError

MAX_BLANK = 80  # THUDM's max_blank_length
LINEBREAK, TAB = "<n>", "<|tab|>"
SPECIAL_TOKENS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]
IMPOSSIBLE = -1e9  # the score of a piece SentencePiece never emits from text (control, byte, image placeholders)

# SentencePiece piece types (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM_TYPE, BPE_TYPE = 1, 2  # SentencePiece model types


class TokenizerError(ConversionError):
    """An ice_text.model this converter cannot reproduce exactly (a code of core/locales with its parameters)."""


def blank_token(length: int) -> str:
    return f"<|blank_{length}|>"


def load_proto(path: str | Path):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def check_layout(proto, path: str | Path) -> None:
    """The final hub revision's ice_text.model has THUDM's pieces built in; the icetk-era file (before April 2023)
    had them appended at load time by icetk, which we do not reproduce."""
    pieces = {p.piece for p in proto.pieces}
    missing = [t for t in SPECIAL_TOKENS if t not in pieces]
    if missing:
        raise TokenizerError("model.v1_icetk_tokenizer", file=str(path), missing=", ".join(missing))
    if proto.trainer_spec.model_type not in (UNIGRAM_TYPE, BPE_TYPE):
        raise TokenizerError("model.v1_tokenizer_type", file=str(path), type=proto.trainer_spec.model_type)


def _normalizer(proto):
    from tokenizers import Regex, normalizers

    steps = [normalizers.Replace("\n", LINEBREAK), normalizers.Replace("\t", TAB)]
    steps += [normalizers.Replace(" " * n, blank_token(n)) for n in range(MAX_BLANK, 1, -1)]
    spec = proto.normalizer_spec
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:  # SentencePiece counts only spaces (after its charsmap) as whitespace here
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:
        # Metaspace adds no "▁" to text that already starts with one; SentencePiece always adds it.
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    return normalizers.Sequence(steps)


def _pre_tokenizer(proto):
    from tokenizers import Regex, pre_tokenizers

    steps = []
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False))
    user_defined = sorted((p.piece for p in proto.pieces if p.type == USER_DEFINED), key=len, reverse=True)
    if user_defined:
        steps.append(pre_tokenizers.Split(Regex("|".join(re.escape(p) for p in user_defined)), behavior="isolated"))
    return pre_tokenizers.Sequence(steps)


def _decoder(proto):
    from tokenizers import decoders

    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))  # after Fuse: the text's start, not each token's
    steps += [decoders.Replace(LINEBREAK, "\n"), decoders.Replace(TAB, "\t")]
    steps += [decoders.Replace(blank_token(n), " " * n) for n in range(2, MAX_BLANK + 1)]
    return decoders.Sequence(steps)


def _model(proto, num_image_tokens: int):
    from tokenizers.models import BPE, Unigram

    images = [f"<image_{i}>" for i in range(num_image_tokens)]
    unk_id = num_image_tokens + proto.trainer_spec.unk_id
    byte_fallback = proto.trainer_spec.byte_fallback
    if proto.trainer_spec.model_type == UNIGRAM_TYPE:
        emitted = (NORMAL, UNKNOWN, USER_DEFINED)
        vocab = [(name, IMPOSSIBLE) for name in images]
        vocab += [(p.piece, p.score if p.type in emitted else IMPOSSIBLE) for p in proto.pieces]
        return Unigram(vocab, unk_id=unk_id, byte_fallback=byte_fallback)
    vocab = {name: i for i, name in enumerate(images)}
    vocab.update({p.piece: num_image_tokens + i for i, p in enumerate(proto.pieces)})
    # SentencePiece's BPE merges the adjacent pair whose union is the best-scoring normal piece: rank pairs so.
    normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == NORMAL}
    ranked = sorted(
        (-score, index, piece[:cut], piece[cut:])
        for piece, (score, index) in normal.items()
        for cut in range(1, len(piece))
        if piece[:cut] in normal and piece[cut:] in normal
    )
    merges = [(left, right) for _, _, left, right in ranked]
    return BPE(
        vocab,
        merges,
        unk_token=proto.trainer_spec.unk_piece,
        fuse_unk=True,
        byte_fallback=byte_fallback,
        ignore_merges=True,
    )


def build_tokenizer(ice_text_model: str | Path, num_image_tokens: int, chat_template: str):
    """A `PreTrainedTokenizerFast` giving THUDM's ids for ChatGLM-6B's ice_text.model."""
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    proto = load_proto(ice_text_model)
    check_layout(proto, ice_text_model)
    core = Tokenizer(_model(proto, num_image_tokens))
    core.normalizer = _normalizer(proto)
    core.pre_tokenizer = _pre_tokenizer(proto)
    core.decoder = _decoder(proto)
    specials = [p.piece for p in proto.pieces if p.type in (UNKNOWN, CONTROL)]
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    ids = {token: core.token_to_id(token) for token in specials}
    core.post_processor = processors.TemplateProcessing(
        single="$A [gMASK] <sop>",
        pair="$A [gMASK] <sop> $B:1 <eop>:1",
        special_tokens=[(t, ids[t]) for t in ("[gMASK]", "<sop>", "<eop>")],
    )
    named = {"<unk>", "<sop>", "<eop>", "<pad>", "[MASK]"}
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<sop>",
        eos_token="<eop>",
        pad_token="<pad>",
        mask_token="[MASK]",
        additional_special_tokens=[t for t in specials if t not in named],
        padding_side="left",
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
    )

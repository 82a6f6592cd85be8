"""Convert a THUDM ChatGLM-6B ("GLM v1") checkpoint into the workbench's native GLM v1 format, once, on disk.

ChatGLM-6B (`model_type: chatglm`, `position_encoding_2d: true`, no `padded_vocab_size`) only ever ran through its
own remote code, which needs transformers < 4.34. The converted folder holds:
- config.json with model_type "glm1_workbench" (core.models.glm1, registered with the Auto classes on import),
  THUDM's names mapped to transformers' (`num_layers` -> `num_hidden_layers`, `inner_hidden_size` ->
  `intermediate_size`, `max_sequence_length` -> `max_position_embeddings`);
- the weights as safetensors under THUDM's own module names, less `rotary_emb.inv_freq` (recomputed, fp16-rounded)
  and `lm_head.weight` (tied to the word embeddings, as THUDM's model ties it);
- a fast tokenizer with THUDM's ids (core.models.glm1.tokenization), its chat template (core.models.glm1.chat),
  and `glm_workbench_conversion.json` saying what was converted.
Both tokenizer revisions convert: the first release's ids after 20,000 image tokens (`num_image_tokens` absent from
tokenizer_config.json: THUDM's default) and the final "slim" one (`num_image_tokens: 0`, vocabulary 130,528).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("glm_workbench")

TOKENIZER_FILE = "ice_text.model"
# THUDM's ChatGLMConfig / ChatGLMTokenizer defaults, which apply when a checkpoint's json files omit a key (the
# first release's config.json has no mask/gmask ids and its tokenizer_config.json no num_image_tokens).
THUDM_DEFAULTS = {
    "bos_token_id": 150004,
    "eos_token_id": 150005,
    "mask_token_id": 150000,
    "gmask_token_id": 150001,
    "pad_token_id": 0,
    "num_image_tokens": 20000,
    "inner_hidden_size": 16384,
    "max_sequence_length": 2048,
    "layernorm_epsilon": 1e-5,
}
SPECIAL_IDS = {
    "bos_token_id": "<sop>",
    "eos_token_id": "<eop>",
    "mask_token_id": "[MASK]",
    "gmask_token_id": "[gMASK]",
    "pad_token_id": "<pad>",
}


class ConversionError(ValueError):
    """A checkpoint that cannot be converted, phrased for the user."""


@dataclass
class ConversionReport:
    source: str
    target: str
    num_image_tokens: int
    vocab_size: int
    tokenizer_model: str
    dtype: str

    def __str__(self) -> str:
        return (
            f"converted ChatGLM-6B (v1) checkpoint {self.source} -> {self.target} (Glm1ForCausalLM); vocabulary "
            f"{self.vocab_size} ({self.num_image_tokens} image tokens first), {self.tokenizer_model} tokenizer, "
            f"{self.dtype}"
        )


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def is_chatglm_v1_checkpoint(folder: str | Path) -> bool:
    """THUDM's ChatGLM-6B layout: `model_type: chatglm` with 2D positions or without ChatGLM2/3's
    `padded_vocab_size` (the same test as core.models.chatglm.is_chatglm_v1)."""
    config = read_json(Path(folder) / "config.json")
    return config.get("model_type") == "chatglm" and (
        bool(config.get("position_encoding_2d")) or "padded_vocab_size" not in config
    )


def _setting(config: dict, key: str):
    return config[key] if config.get(key) is not None else THUDM_DEFAULTS[key]


def _check_supported(source: Path, config: dict) -> None:
    if not is_chatglm_v1_checkpoint(source):
        raise ConversionError(
            f"{source}: not a ChatGLM-6B (v1) checkpoint (model_type {config.get('model_type')!r}, "
            f"position_encoding_2d {config.get('position_encoding_2d')!r})"
        )
    if not config.get("position_encoding_2d", True):
        raise ConversionError(f"{source}: 1D positions (position_encoding_2d false) are not ChatGLM-6B's")
    if config.get("quantization_bit"):
        raise ConversionError(
            f"{source}: a {config['quantization_bit']}-bit quantized checkpoint (THUDM's own "
            "int4/int8 format); convert the full-precision THUDM/chatglm-6b instead and quantize "
            "when loading"
        )
    if config.get("pre_seq_len"):
        raise ConversionError(
            f"{source}: a P-tuning checkpoint (pre_seq_len {config['pre_seq_len']}); convert its "
            "base model, THUDM/chatglm-6b"
        )
    if not (source / TOKENIZER_FILE).is_file():
        raise ConversionError(f"{source}: no {TOKENIZER_FILE}")


def native_config(config: dict, num_image_tokens: int, token_ids: dict[str, int]):
    """Our Glm1Config from THUDM's config.json (and the tokenizer's ids, which must agree with it)."""
    from core.models.glm1 import Glm1Config

    ids = {}
    for key, token in SPECIAL_IDS.items():
        value = _setting(config, key)
        if value != token_ids[token]:
            raise ConversionError(
                f"config.json {key} is {value} but the tokenizer's {token} is {token_ids[token]}: "
                "the tokenizer files and config.json are from different revisions"
            )
        ids[key] = value
    dtype = str(config.get("torch_dtype") or "float16")
    return Glm1Config(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=_setting(config, "inner_hidden_size"),
        num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_attention_heads"],
        layernorm_epsilon=_setting(config, "layernorm_epsilon"),
        max_position_embeddings=_setting(config, "max_sequence_length"),
        num_image_tokens=num_image_tokens,
        dtype=dtype,
        **ids,
    )


def load_thudm_weights(folder: Path) -> dict:
    """Every tensor of the checkpoint: pytorch_model*.bin (the hub's) or *.safetensors, sharded or not."""
    import torch
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ConversionError(f"{folder}: no pytorch_model*.bin or *.safetensors weights found")
    state: dict = {}
    for file in files:
        state.update(
            load_file(str(file))
            if file.suffix == ".safetensors"
            else torch.load(file, map_location="cpu", weights_only=True)
        )
    return state


def convert_state_dict(state: dict, config) -> dict:
    """THUDM's tensors under the same names, less the recomputed inv_freq and the tied lm_head (checked equal)."""
    import torch

    out = {}
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight":
            embeddings = state.get("transformer.word_embeddings.weight")
            if embeddings is not None and not torch.equal(tensor, embeddings):
                raise ConversionError(
                    "lm_head.weight differs from transformer.word_embeddings.weight; ChatGLM-6B "
                    "ties them (THUDM's code loads one into the other), so this checkpoint is "
                    "not one it can run"
                )
            continue
        out[name] = tensor
    expected = config.vocab_size, config.hidden_size
    found = tuple(out.get("transformer.word_embeddings.weight", torch.empty(0)).shape)
    if found != expected:
        raise ConversionError(f"word embeddings are {found}, config.json says {expected}")
    return out


def convert_tokenizer(source: str | Path, num_image_tokens: int | None = None):
    """The fast tokenizer for a ChatGLM-6B folder (its ice_text.model and tokenizer_config.json)."""
    from core.models.glm1.chat import CHAT_TEMPLATE
    from core.models.glm1.tokenization import TokenizerError, build_tokenizer

    source = Path(source)
    if num_image_tokens is None:
        num_image_tokens = _setting(read_json(source / "tokenizer_config.json"), "num_image_tokens")
    try:
        return build_tokenizer(source / TOKENIZER_FILE, num_image_tokens, CHAT_TEMPLATE)
    except TokenizerError as exc:
        raise ConversionError(f"{source}: {exc}") from None


def _staging_dir(target: Path) -> Path:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConversionError(
            f"{target}: already exists and is not empty; choose a new folder (nothing is overwritten)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def convert_chatglm_v1(source: str | Path, target: str | Path) -> ConversionReport:
    """Convert THUDM's ChatGLM-6B folder `source` into a new native folder `target`, written whole or not at all:
    into a staging folder beside it, renamed into place when complete. An existing non-empty target is refused."""
    import torch

    from core.models.glm1 import Glm1ForCausalLM
    from core.models.glm1.tokenization import load_proto

    source, target = Path(source), Path(target)
    config = read_json(source / "config.json")
    _check_supported(source, config)
    num_image_tokens = _setting(read_json(source / "tokenizer_config.json"), "num_image_tokens")
    tokenizer = convert_tokenizer(source, num_image_tokens)
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_IDS.values()}
    glm1_config = native_config(config, num_image_tokens, token_ids)
    if len(tokenizer) != glm1_config.vocab_size:
        raise ConversionError(
            f"{source}: the tokenizer has {len(tokenizer)} tokens, config.json vocab_size is {glm1_config.vocab_size}"
        )
    state = convert_state_dict(load_thudm_weights(source), glm1_config)
    dtype = getattr(torch, str(glm1_config.dtype).replace("torch.", ""))
    with torch.device("meta"):
        model = Glm1ForCausalLM(glm1_config)
    state["lm_head.weight"] = state["transformer.word_embeddings.weight"]
    model.load_state_dict(state, assign=True, strict=True)
    model.tie_weights()
    model.to(dtype)
    model_type = {1: "unigram", 2: "BPE"}[load_proto(source / TOKENIZER_FILE).trainer_spec.model_type]
    report = ConversionReport(
        str(source), str(target), num_image_tokens, glm1_config.vocab_size, model_type, str(dtype).replace("torch.", "")
    )
    staging = _staging_dir(target)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "glm_workbench_conversion.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        os.rename(staging, target)  # atomic; onto an empty folder too, never onto a non-empty one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s", report)
    return report

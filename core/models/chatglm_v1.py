"""Convert a THUDM ChatGLM-6B ("GLM v1") checkpoint into the workbench's native GLM v1 format, once, on disk.

ChatGLM-6B (`model_type: chatglm`, `position_encoding_2d: true`, no `padded_vocab_size`) only ever ran through its
own remote code, which needs transformers < 4.34. The converted folder holds:
- config.json with model_type "glm1_workbench" (core.models.glm1, registered with the Auto classes on import),
  THUDM's names mapped to transformers' (`num_layers` -> `num_hidden_layers`, `inner_hidden_size` ->
  `intermediate_size`, `max_sequence_length` -> `max_position_embeddings`);
- the weights as safetensors under THUDM's own module names, less `rotary_emb.inv_freq` (recomputed, fp16-rounded)
  and `lm_head.weight` (tied to the word embeddings, as THUDM's model ties it);
- a fast tokenizer with THUDM's ids (core.models.glm1.tokenization), the `chatglm` chat template's Jinja
  (core.data.template), `glm_workbench_conversion.json` saying what was converted, and the marker of a finished
  conversion of ours (core.files), written through a staging folder like every conversion (core.models.chatglm).
Both tokenizer revisions convert: the first release's ids after 20,000 image tokens (`num_image_tokens` absent from
tokenizer_config.json: THUDM's default) and the final "slim" one (`num_image_tokens: 0`). Both pad the embedding by
184 rows that no token reaches (130,344 tokens in `vocab_size` 130,528; 150,344 in 150,528): the rows are kept and
`tokenizer_vocab_size` tells generation never to pick them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import ConversionError, ModelError
from core.files import CONVERTED_KIND, TargetNotFreeError, check_target_free, refusal, staged_dir

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


@dataclass
class ConversionReport:
    source: str
    target: str
    variant: str
    template: str
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


def _check_supported(source: Path, config: dict, tokenizer: bool = True) -> None:
    folder = str(source)
    if not is_chatglm_v1_checkpoint(source):
        raise ConversionError(
            "model.v1_not_chatglm_6b",
            folder=folder,
            model_type=repr(config.get("model_type")),
            positions=repr(config.get("position_encoding_2d")),
        )
    if not config.get("position_encoding_2d", True):
        raise ConversionError("model.v1_1d_positions", folder=folder)
    if config.get("quantization_bit"):
        raise ConversionError("model.v1_quantized", folder=folder, bits=config["quantization_bit"])
    if config.get("pre_seq_len"):
        raise ConversionError("model.v1_ptuning_checkpoint", folder=folder, pre_seq_len=config["pre_seq_len"])
    if tokenizer and not (source / TOKENIZER_FILE).is_file():
        raise ConversionError("model.v1_no_tokenizer_file", folder=folder, file=TOKENIZER_FILE)


def native_config(config: dict, num_image_tokens: int, token_ids: dict[str, int] | None = None):
    """Our Glm1Config from THUDM's config.json, and the tokenizer's ids, which must agree with it (without them,
    config.json alone: the shape for the memory estimate)."""
    from core.models.glm1 import Glm1Config  # core.models.glm1 imports torch and transformers

    ids = {}
    for key, token in SPECIAL_IDS.items():
        value = _setting(config, key)
        if token_ids is not None and value != token_ids[token]:
            raise ConversionError("model.v1_ids_disagree", key=key, value=value, token=token, token_id=token_ids[token])
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
        raise ModelError("model.no_weights", folder=str(folder))
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
                raise ConversionError("model.v1_untied_lm_head")
            continue
        out[name] = tensor
    expected = config.vocab_size, config.hidden_size
    found = tuple(out.get("transformer.word_embeddings.weight", torch.empty(0)).shape)
    if found != expected:
        raise ConversionError("model.v1_embedding_shape", found=str(found), expected=str(expected))
    return out


def convert_tokenizer(source: str | Path, num_image_tokens: int | None = None):
    """The fast tokenizer for a ChatGLM-6B folder (its ice_text.model and tokenizer_config.json), in memory: what a
    conversion saves, and what previews (sample render, length histogram) read without converting anything."""
    from core.models.glm1.chat import CHAT_TEMPLATE  # (glm1 imports torch)
    from core.models.glm1.tokenization import build_tokenizer

    source = Path(source)
    if not (source / TOKENIZER_FILE).is_file():
        raise ConversionError("model.v1_no_tokenizer_file", folder=str(source), file=TOKENIZER_FILE)
    if num_image_tokens is None:
        num_image_tokens = _setting(read_json(source / "tokenizer_config.json"), "num_image_tokens")
    return build_tokenizer(source / TOKENIZER_FILE, num_image_tokens, CHAT_TEMPLATE)


def shape_config(source: str | Path):
    """The native config of a ChatGLM-6B checkpoint from its json files alone (the memory estimate): nothing
    converted, no tokenizer built, no weights read."""
    source = Path(source)
    config = read_json(source / "config.json")
    _check_supported(source, config, tokenizer=False)
    return native_config(config, _setting(read_json(source / "tokenizer_config.json"), "num_image_tokens"))


def convert_chatglm_v1(source: str | Path, target: str | Path, overwrite: bool = False) -> ConversionReport:
    """Convert THUDM's ChatGLM-6B folder `source` into a native folder `target`, written whole or not at all: into
    a staging folder beside it, renamed into place when complete. A target that exists and is not empty is
    refused; with `overwrite`, only an earlier conversion of ours is replaced (after the new one is complete)."""
    import torch

    from core.models.glm1 import Glm1ForCausalLM  # torch
    from core.models.glm1.tokenization import load_proto

    source, target = Path(source), Path(target)
    replace = "ours" if overwrite else "never"
    try:
        check_target_free(target, CONVERTED_KIND, replace)  # refused before the weights are read
    except TargetNotFreeError as exc:
        raise refusal(exc) from None
    config = read_json(source / "config.json")
    _check_supported(source, config)
    num_image_tokens = _setting(read_json(source / "tokenizer_config.json"), "num_image_tokens")
    tokenizer = convert_tokenizer(source, num_image_tokens)
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_IDS.values()}
    glm1_config = native_config(config, num_image_tokens, token_ids)
    # Every real checkpoint pads the embedding past the tokenizer (130,344 tokens in 130,528 rows; the first release
    # 150,344 in 150,528): the padded rows stay, so the logits keep THUDM's shape, and generation never picks one.
    if len(tokenizer) > glm1_config.vocab_size:
        raise ConversionError(
            "model.v1_vocab_size", folder=str(source), tokens=len(tokenizer), vocab_size=glm1_config.vocab_size
        )
    glm1_config.tokenizer_vocab_size = len(tokenizer)
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
        str(source),
        str(target),
        "chatglm-6b",
        "chatglm",
        num_image_tokens,
        glm1_config.vocab_size,
        model_type,
        str(dtype).replace("torch.", ""),
    )
    try:
        with staged_dir(target, kind=CONVERTED_KIND, replace=replace) as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            (folder / "glm_workbench_conversion.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    except TargetNotFreeError as exc:
        raise refusal(exc) from None
    log.info("%s", report)
    return report

"""The embedded demo model: a tiny, randomly initialised GLM-4 (`Glm4ForCausalLM`) with a real GLM-style tokenizer.

It exists so that the whole workflow (data -> train -> chart -> chat -> export) runs offline on a CPU in a
minute. Its weights are random: before training it babbles; after a short LoRA run on the identity set it
answers like the data. The build is deterministic (fixed seed, fixed corpus) and takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.data.template import chat_template_jinja
from core.resources import asset, home_dir

RECIPE_VERSION = 1
DEMO_NAME = "demo"
MARKER_FILE = "glm_workbench_demo.json"
DEMO_KIND = "demo-model"  # the staging marker (core/files.py) of a finished build

SPECIAL_TOKENS = [
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
STOP_TOKENS = ["<|endoftext|>", "<|user|>", "<|observation|>"]
ARCHITECTURE = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    initializer_range=0.1,
)
VOCAB_SIZE = 4096


def default_demo_dir() -> Path:
    return home_dir() / f"demo-model-v{RECIPE_VERSION}"


def is_demo_model(path: str | Path) -> bool:
    return (Path(path) / MARKER_FILE).is_file()


def ensure_demo_model(target: str | Path | None = None) -> Path:
    """Return the demo model's folder, building it first if it is not there yet (once, under a file lock, so
    two processes starting together build it once)."""
    import fcntl

    target = Path(target) if target else default_demo_dir()
    if is_demo_model(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_demo_model(target):
            build_demo_model(target, overwrite=True)
    return target


# The demo datasets the tokenizer learns from, named: a dataset added later (identity_pairs) must not change the
# tokenizer of RECIPE_VERSION 1, or a demo model built today would differ from one cached earlier.
TOKENIZER_DATASETS = ("advertise_gen.jsonl", "identity.json", "multiturn.json")


def _tokenizer_texts() -> list[str]:
    """The text the tokenizer learns its merges from: our corpus plus the original demo datasets (the package's
    data, so an installed workbench builds the same tokenizer as a checkout)."""
    texts = asset("demo_model", "corpus.txt").read_text(encoding="utf-8").splitlines()
    for name in TOKENIZER_DATASETS:
        texts += asset("datasets", name).read_text(encoding="utf-8").splitlines()
    return [line for line in texts if line.strip()]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(_tokenizer_texts(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="right",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=chat_template_jinja("glm4"),
        model_max_length=4096,
    )


def build_demo_model(target: str | Path, overwrite: bool = False) -> Path:
    """Build the tokenizer and the random-weight GLM-4 into `target`: a staging folder renamed into place. A
    target that is not empty is refused, except (with `overwrite`) an earlier demo model of ours."""
    import torch
    from transformers import GenerationConfig, Glm4Config, Glm4ForCausalLM

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    stop_ids = [tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]
    config = Glm4Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids,
        tie_word_embeddings=False,
        **ARCHITECTURE,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = Glm4ForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=64
    )
    from core.files import TargetNotFreeError, refusal, staged_dir

    try:
        with staged_dir(target, kind=DEMO_KIND, replace="ours" if overwrite else "never") as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            marker = {
                "recipe_version": RECIPE_VERSION,
                "parameters": model.num_parameters(),
                "note": "Tiny GLM-4 with random weights, for trying the workflow. Not a real language model.",
            }
            (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    except TargetNotFreeError as exc:
        raise refusal(exc) from None
    return target

"""The embedded demo models: a tiny, randomly initialised GLM-4 (`Glm4ForCausalLM`, `demo`) and a tiny GLM-4.5
(`Glm4MoeForCausalLM`, `demo-moe`: GLM-4.5's layout -- a dense first layer, then routed experts with a shared one --
its chat template with reasoning and tool calls, and their tokens), each with a real GLM-style tokenizer; and two
tiny GLM-V models (`demo-vision`: `Glm4vForConditionalGeneration`, `demo-vision-moe`: `Glm4vMoe...`) in the real
checkpoints' config shape and GLM-4.1V's image-processor settings, the first with GLM-4.1V's own
chat_template.jinja, the second with GLM-4.5V's (GLM-4.5's thinking and tool calls, images in the user turns).

They exist so that the whole workflow (data -> train -> chart -> chat -> export) runs offline on a CPU in a
minute. Their weights are random: before training they babble; after a short LoRA run on the identity set (or the
tool-calling set for `demo-moe`) they answer like the data. Each build is deterministic (fixed seed, fixed corpus)
and takes a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.data.glm45 import FORMAT_TOKENS, TOOLS_INTRO, TOOLS_OUTRO
from core.data.template import chat_template_jinja
from core.models import vision
from core.resources import asset, home_dir

RECIPE_VERSION = 1
DEMO_NAME = "demo"
MOE_DEMO_NAME = "demo-moe"
VISION_DEMO_NAME = "demo-vision"
VISION_MOE_DEMO_NAME = "demo-vision-moe"
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
# GLM-4.5's layout in miniature: the first layer dense (first_k_dense_replace), the others 8 routed experts (2 per
# token) plus a shared one; partial rotary (half the head), sigmoid router with a correction bias. Experts of width
# 128 keep the active MLP (3 x 128) near the dense demo's 512. Weights drawn at 0.1: tiny models learn under LoRA
# only when drawn that wide (shared/FACTS.md).
MOE_ARCHITECTURE = dict(
    hidden_size=256,
    intermediate_size=512,
    moe_intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    first_k_dense_replace=1,
    num_nextn_predict_layers=0,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    initializer_range=0.1,
)

# GLM-4.1V in miniature: the text model as the dense demo, M-RoPE over half the head (GLM-4.1V's partial rotary:
# mrope_section sums to a quarter of head_dim, as [8, 12, 12] does for 128), a 2-block vision tower with the real
# patching (14-pixel patches, 2x2 merge, 2-frame temporal patches) projecting into the text width.
_VISION_TEXT = dict(
    ARCHITECTURE,
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.5,
        "mrope_section": [4, 6, 6],
    },
)
del _VISION_TEXT["head_dim"]  # Glm4vTextConfig derives it (hidden_size / heads = 64)
_VISION_TOWER = dict(
    depth=2,
    hidden_size=64,
    num_heads=2,
    intermediate_size=128,
    out_hidden_size=ARCHITECTURE["hidden_size"],
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    image_size=336,
    initializer_range=0.1,
)
VISION_ARCHITECTURE = dict(text_config=_VISION_TEXT, vision_config=_VISION_TOWER)
_MOE_KEYS = ("moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts")
VISION_MOE_ARCHITECTURE = dict(
    text_config=dict(_VISION_TEXT, first_k_dense_replace=1, **{key: MOE_ARCHITECTURE[key] for key in _MOE_KEYS}),
    vision_config=_VISION_TOWER,
)
# GLM-4.1V's image processor keeps its minimum (12,544 pixels over 2 temporal frames) and caps an image at 112 x 112
# pixels: 16 <|image|> tokens at most, 9 for a small one.
VISION_IMAGE_SIZE = {"shortest_edge": 12544, "longest_edge": 2 * 112 * 112}
# The GLM-4.1V tokenizer's vision tokens are special; its thinking tags are plain added tokens.
VISION_SPECIAL_TOKENS = tuple(vision.VISION_TOKENS.values())
VISION_TEXT_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
# GLM-4.5V / 4.6V mark a final answer's box with two more special tokens (a reply's decode drops them).
BOX_TOKENS = ("<|begin_of_box|>", "<|end_of_box|>")


@dataclass(frozen=True)
class DemoRecipe:
    name: str
    folder: str  # under the workbench home
    config_class: str  # transformers' config and model classes
    model_class: str
    architecture: dict = field(default_factory=dict)
    template: str = "glm4"
    extra_tokens: tuple[str, ...] = ()
    extra_texts: tuple[str, ...] = ()  # more demo datasets the tokenizer learns from
    note: str = ""
    extra_special_tokens: tuple[str, ...] = ()  # added as special tokens (the vision tokens)
    chat_template_file: str = ""  # a real template from core/assets/templates, instead of `template`'s Jinja
    image_size: dict = field(default_factory=dict)  # vision demos: the image processor's pixel budget

    @property
    def is_vision(self) -> bool:
        return bool(self.image_size)


DEMOS = {
    DEMO_NAME: DemoRecipe(
        DEMO_NAME,
        f"demo-model-v{RECIPE_VERSION}",
        "Glm4Config",
        "Glm4ForCausalLM",
        ARCHITECTURE,
        note="Tiny GLM-4 with random weights, for trying the workflow. Not a real language model.",
    ),
    MOE_DEMO_NAME: DemoRecipe(
        MOE_DEMO_NAME,
        "demo-moe-v1",
        "Glm4MoeConfig",
        "Glm4MoeForCausalLM",
        MOE_ARCHITECTURE,
        template="glm4_moe",
        extra_tokens=FORMAT_TOKENS,
        extra_texts=("tool_calls.json",),
        note="Tiny GLM-4.5 (MoE) with random weights and GLM-4.5's chat format, for trying the workflow.",
    ),
    VISION_DEMO_NAME: DemoRecipe(
        VISION_DEMO_NAME,
        "demo-vision-v1",
        "Glm4vConfig",
        "Glm4vForConditionalGeneration",
        VISION_ARCHITECTURE,
        extra_tokens=VISION_TEXT_TOKENS,
        note="Tiny GLM-4.1V (glm4v) with random weights, GLM-4.1V's chat template and image processor.",
        extra_special_tokens=VISION_SPECIAL_TOKENS,
        chat_template_file="glm4v.jinja",
        image_size=VISION_IMAGE_SIZE,
    ),
    VISION_MOE_DEMO_NAME: DemoRecipe(
        VISION_MOE_DEMO_NAME,
        "demo-vision-moe-v2",
        "Glm4vMoeConfig",
        "Glm4vMoeForConditionalGeneration",
        VISION_MOE_ARCHITECTURE,
        extra_tokens=FORMAT_TOKENS,
        extra_texts=("tool_calls.json",),
        note="Tiny GLM-4.5V (glm4v_moe) with random weights, GLM-4.5V's chat format (thinking, tool calls, images) "
        "and GLM-4.1V's image processor.",
        extra_special_tokens=VISION_SPECIAL_TOKENS + BOX_TOKENS,
        chat_template_file="glm45v.jinja",
        image_size=VISION_IMAGE_SIZE,
    ),
}


def default_demo_dir(name: str = DEMO_NAME) -> Path:
    return home_dir() / DEMOS[name].folder


def is_demo_model(path: str | Path) -> bool:
    return (Path(path) / MARKER_FILE).is_file()


def ensure_demo_model(target: str | Path | None = None, name: str = DEMO_NAME) -> Path:
    """Return the demo model's folder, building it first if it is not there yet (once, under a file lock, so
    two processes starting together build it once)."""
    import fcntl

    target = Path(target) if target else default_demo_dir(name)
    if is_demo_model(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_demo_model(target):
            build_demo_model(target, overwrite=True, name=name)
    return target


# The demo datasets the tokenizer learns from, named: a dataset added later (identity_pairs) must not change the
# tokenizer of RECIPE_VERSION 1, or a demo model built today would differ from one cached earlier.
TOKENIZER_DATASETS = ("advertise_gen.jsonl", "identity.json", "multiturn.json")


def _tokenizer_texts(recipe: DemoRecipe) -> list[str]:
    """The text the tokenizer learns its merges from: our corpus plus the original demo datasets (the package's
    data, so an installed workbench builds the same tokenizer as a checkout), plus the recipe's own (the MoE demo
    learns the tools block and its tool-calling set, so a row fits the default cutoff)."""
    texts = asset("demo_model", "corpus.txt").read_text(encoding="utf-8").splitlines()
    for name in TOKENIZER_DATASETS + recipe.extra_texts:
        texts += asset("datasets", name).read_text(encoding="utf-8").splitlines()
    if recipe.extra_texts:
        texts += (TOOLS_INTRO + TOOLS_OUTRO).splitlines()
    return [line for line in texts if line.strip()]


def build_tokenizer(recipe: DemoRecipe = DEMOS[DEMO_NAME]):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
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
    core.train_from_iterator(_tokenizer_texts(recipe), trainer)
    # GLM-4.5's format tokens are added tokens but not special ones (as in the real tokenizers): split out of text
    # before it is encoded, kept when decoding (the chat parses the reasoning and the tool calls from them).
    core.add_tokens([AddedToken(token, normalized=False, special=False) for token in recipe.extra_tokens])
    core.add_special_tokens(
        [AddedToken(token, normalized=False, special=True) for token in recipe.extra_special_tokens]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="right",
        additional_special_tokens=SPECIAL_TOKENS[1:] + list(recipe.extra_special_tokens),
        chat_template=_chat_template(recipe),
        model_max_length=4096,
    )


def _chat_template(recipe: DemoRecipe) -> str:
    """A real checkpoint's template where the recipe names one (the vision demos), else our generated Jinja."""
    if recipe.chat_template_file:
        return asset("templates", recipe.chat_template_file).read_text(encoding="utf-8")
    return chat_template_jinja(recipe.template)


def demo_config(recipe: DemoRecipe, tokenizer):
    """The transformers config `build_demo_model` writes for `recipe` with this tokenizer: what the memory estimate
    reads for a demo model that is not built yet, so an estimate never builds it."""
    import transformers

    stop_ids = [tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]
    if recipe.is_vision:
        text = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids)
        return vision.vision_config(recipe.config_class, recipe.architecture, tokenizer, text)
    return getattr(transformers, recipe.config_class)(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids,
        tie_word_embeddings=False,
        **recipe.architecture,
    )


def build_demo_model(target: str | Path, overwrite: bool = False, name: str = DEMO_NAME) -> Path:
    """Build the tokenizer and the random-weight model of demo `name` into `target`: a staging folder renamed into
    place. A target that is not empty is refused, except (with `overwrite`) an earlier demo model of ours."""
    import torch
    import transformers
    from transformers import GenerationConfig

    recipe = DEMOS[name]
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(recipe)
    config = demo_config(recipe, tokenizer)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = getattr(transformers, recipe.model_class)(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        eos_token_id=config.get_text_config().eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    from core.files import TargetNotFreeError, refusal, staged_dir

    try:
        with staged_dir(target, kind=DEMO_KIND, replace="ours" if overwrite else "never") as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            if recipe.is_vision:
                vision.demo_image_processor(recipe.image_size).save_pretrained(staging)
            marker = {
                "recipe_version": RECIPE_VERSION,
                "parameters": model.num_parameters(),
                "demo": recipe.name,
                "note": recipe.note,
            }
            (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    except TargetNotFreeError as exc:
        raise refusal(exc) from None
    return target

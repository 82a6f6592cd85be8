"""The GLM-V family: GLM-4.1V / GLM-4.6V-Flash (`glm4v`), GLM-4.5V / GLM-4.6V (`glm4v_moe`, MoE), transformers'
`glm46v` class and GLM-OCR (`glm_ocr`): the same vision tower and merger layout under `model.visual`.

What sets them apart from the text models: a vision tower whose merged patches enter the text as `<|image|>`
tokens between `<|begin_of_image|>` and `<|end_of_image|>`, and an image processor beside the tokenizer. The
processor is loaded alone (`AutoImageProcessor`, its PIL path): transformers' full `AutoProcessor` also builds
the video processor, which needs torchvision, absent where the pinned CPU torch has no build of it
(shared/FACTS.md). Image fine-tuning needs the image processor only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ModelError

# model_type in config.json -> the transformers class that loads it
VISION_MODEL_TYPES = {
    "glm4v": "Glm4vForConditionalGeneration",  # GLM-4.1V-9B-Thinking, GLM-4.6V-Flash
    "glm4v_moe": "Glm4vMoeForConditionalGeneration",  # GLM-4.5V, GLM-4.6V
    "glm46v": "Glm46VForConditionalGeneration",  # transformers' GLM-4.6V class (GLM-4.1V's layers)
    "glm_ocr": "GlmOcrForConditionalGeneration",  # GLM-OCR
}
# The vision tokens, as the checkpoints' tokenizers have them (special tokens), by the config key naming their id.
VISION_TOKENS = {
    "image_start_token_id": "<|begin_of_image|>",
    "image_end_token_id": "<|end_of_image|>",
    "video_start_token_id": "<|begin_of_video|>",
    "video_end_token_id": "<|end_of_video|>",
    "image_token_id": "<|image|>",
    "video_token_id": "<|video|>",
}
IMAGE_TOKEN = VISION_TOKENS["image_token_id"]


def vision_type(config: dict[str, Any]) -> str:
    """`glm4v` / `glm4v_moe` for a GLM-V config.json's contents, "" for any other model."""
    model_type = config.get("model_type", "")
    return model_type if model_type in VISION_MODEL_TYPES else ""


def vision_config(config_class: str, architecture: dict[str, Any], tokenizer, text: dict[str, Any]):
    """A GLM-V config in the real checkpoints' shape (text_config + vision_config, the vision token ids) with the
    ids of `tokenizer`'s vision tokens; `text` adds the tokenizer-dependent text keys (vocab, pad, eos)."""
    import transformers

    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in VISION_TOKENS.items()}
    return getattr(transformers, config_class)(
        text_config={**architecture["text_config"], **text},
        vision_config=dict(architecture["vision_config"]),
        tie_word_embeddings=False,
        **ids,
    )


def demo_image_processor(size: dict[str, int]):
    """The image processor a vision demo saves: GLM-4.1V's own settings (14-pixel patches, 2x2 merge, 2-frame
    temporal patches, CLIP mean/std), only the pixel budget small, so an image costs a handful of tokens."""
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    return Glm4vImageProcessorPil(size=dict(size))


def load_image_processor(path: str | Path):
    """The checkpoint's own image processor (preprocessor_config.json), on its PIL path: no torchvision needed."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(path))
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError("model.image_processor_failed", folder=str(path), detail=str(exc).splitlines()[0]) from None


def image_processor_for(path: str | Path, config) -> Any:
    """The checkpoint's image processor with the run's pixel budget (LLaMA-Factory's image_max_pixels /
    image_min_pixels; 0 keeps the checkpoint's own): fewer pixels, fewer image tokens, a faster step."""
    processor = load_image_processor(path)
    size = dict(getattr(processor, "size", None) or {})
    if config.image_max_pixels:
        size["longest_edge"] = int(config.image_max_pixels)
    if config.image_min_pixels:
        size["shortest_edge"] = int(config.image_min_pixels)
    if size:
        processor.size = size
    return processor


# Where the vision side of a GLM-V model lives (module names), as LLaMA-Factory splits it: the projector (the
# merger, which maps merged patches into the text's hidden size) and the tower (everything else under `visual`).
PROJECTOR = "visual.merger"
TOWER = "visual"


def part_of(name: str) -> str:
    """ "projector", "tower" or "language" for a module or parameter name of a GLM-V model."""
    padded = "." + name + "."
    if f".{PROJECTOR}." in padded:
        return "projector"
    if f".{TOWER}." in padded:
        return "tower"
    return "language"


def has_vision_tower(model) -> bool:
    return any(part_of(name) == "tower" for name, _ in model.named_parameters())


def trained_parts(config) -> set[str]:
    """The vision parts the run trains besides the language model (frozen by default, as in LLaMA-Factory)."""
    parts = set()
    if not getattr(config, "freeze_vision_tower", True):
        parts.add("tower")
    if not getattr(config, "freeze_multi_modal_projector", True):
        parts.add("projector")
    return parts


def lora_module_names(model, leaf_names: list[str], config) -> list[str]:
    """Full module names for peft: the language model's Linear layers named by `leaf_names`, and every Linear layer
    of a vision part the run trains. Leaf names alone would also match the tower (its MLP has gate_proj, up_proj,
    down_proj too), so a GLM-V model's targets are always spelled out."""
    import torch

    parts = trained_parts(config)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        part = part_of(name)
        if part in parts or (part == "language" and name.rsplit(".", 1)[-1] in leaf_names):
            names.append(name)
    return names


def set_vision_trainable(model, config) -> None:
    """After a method that trains base weights (full, freeze) chose its parameters: the tower and the projector
    train only where the run asks (freeze_vision_tower / freeze_multi_modal_projector set to false)."""
    parts = trained_parts(config)
    for name, parameter in model.named_parameters():
        part = part_of(name)
        if part != "language":
            parameter.requires_grad_(part in parts)


# model_type -> the transformers class of its vision tower (with the merger), for counting its parameters
VISION_TOWER_CLASSES = {
    "glm4v": "Glm4vVisionModel",
    "glm4v_moe": "Glm4vMoeVisionModel",
    "glm46v": "Glm4vVisionModel",
    "glm_ocr": "GlmOcrVisionModel",
}


def vision_parameter_counts(config) -> tuple[int, int]:
    """(tower, projector) parameter counts of a GLM-V config, exact: the tower is built on the meta device (no
    memory, no weights read) and counted; (0, 0) for a text model's config."""
    model_type = getattr(config, "model_type", "")
    if model_type not in VISION_TOWER_CLASSES:
        return 0, 0
    import torch
    import transformers

    with torch.device("meta"):
        tower = getattr(transformers, VISION_TOWER_CLASSES[model_type])(config.vision_config)
    projector = sum(p.numel() for name, p in tower.named_parameters() if name.startswith("merger."))
    return sum(p.numel() for p in tower.parameters()) - projector, projector

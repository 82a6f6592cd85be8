"""The GLM-V family: GLM-4.1V / GLM-4.6V-Flash (`glm4v`) and GLM-4.5V / GLM-4.6V (`glm4v_moe`, MoE).

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
    "glm4v": "Glm4vForConditionalGeneration",
    "glm4v_moe": "Glm4vMoeForConditionalGeneration",
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

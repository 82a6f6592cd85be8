"""Load a finished run exactly as it was trained (same quantization, adapter or prefix), for inference.

The chat engine hot-swaps adapters on one full-precision base; this loader instead rebuilds the training-time
model of one run, which is what evaluation and the save/reload checks need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig, load_yaml
from core.data.multimodal import VisionEncoder
from core.methods import get_method, load_input_adapter
from core.methods.base import InputAdapter
from core.models.loader import load_model, load_tokenizer, locate_model, pick_device, pick_dtype, prepare_model
from core.models.vision import load_image_processor
from core.runs import ADAPTER_DIR, CONFIG_FILE, MODEL_DIR


@dataclass
class TrainedModel:
    model: object
    tokenizer: object
    config: RunConfig
    prefix: InputAdapter | None = None  # an adapter that feeds the inputs (P-tuning v2's prefix)
    vision: VisionEncoder | None = None  # a GLM-V model's: its rows and prompts carry images

    def forward_kwargs(self, input_ids, attention_mask=None) -> dict:
        """Inputs for `model(...)` or `model.generate(...)`, with the P-tuning prefix where there is one."""
        import torch

        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if self.prefix is not None:
            return self.prefix.generate_kwargs(self.model, input_ids, attention_mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def logits(self, input_ids):
        import torch

        with torch.inference_mode():
            return self.model(**self.forward_kwargs(input_ids)).logits


def with_vision(trained: TrainedModel, folder: str | Path) -> TrainedModel:
    """A GLM-V model gets its encoder, with the image processor in `folder` (what the run saved: the pixel budget
    it trained with), else the base model's."""
    base = prepare_model(trained.config.model_name_or_path, trained.config.trust_remote_code)
    if locate_model(base).vision_type:
        source = folder if (Path(folder) / "preprocessor_config.json").is_file() else base
        trained.vision = VisionEncoder(trained.tokenizer, load_image_processor(source))
    return trained


def load_base(config: RunConfig) -> TrainedModel:
    """The base model a run started from (`model_name_or_path`, no adapter, not quantized), as the chat serves it:
    the arena's other contestant when a run is compared with its base."""
    device = pick_device()
    path = prepare_model(config.model_name_or_path, config.trust_remote_code)
    model = load_model(path, dtype=pick_dtype(config.precision, device), trust_remote_code=config.trust_remote_code)
    return with_vision(TrainedModel(model.eval(), load_tokenizer(path, config.trust_remote_code), config), path)


def load_trained(run_dir: str | Path) -> TrainedModel:
    run_dir = Path(run_dir)
    config = load_yaml(run_dir / CONFIG_FILE)
    method = get_method(config.finetuning_type)
    device = pick_device()
    if method.trains_base:
        folder = str(run_dir / MODEL_DIR)
        model = load_model(folder, dtype=pick_dtype(config.precision, device))
        return with_vision(TrainedModel(model, load_tokenizer(folder), config), folder)
    base_path = prepare_model(config.model_name_or_path, config.trust_remote_code)
    base = load_model(
        base_path,
        dtype=pick_dtype(config.precision, device),
        trust_remote_code=config.trust_remote_code,
        **method.model_kwargs(config),
    )
    adapter = run_dir / ADAPTER_DIR
    inputs = load_input_adapter(adapter)
    if inputs is not None:
        return TrainedModel(base, load_tokenizer(base_path, config.trust_remote_code), config, inputs)
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    return with_vision(TrainedModel(model, load_tokenizer(base_path, config.trust_remote_code), config), adapter)

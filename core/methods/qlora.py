"""QLoRA: the base model loaded in 4-bit (nf4/fp4, double quantization) or 8-bit by bitsandbytes, LoRA on top.

The adapter it saves is a plain PEFT LoRA adapter: it also loads onto the full-precision base (chat, merge).
"""

from __future__ import annotations

from core.methods import lora
from core.methods.base import Method, save_model_and_tokenizer


def compute_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def quantization_config(config):
    from transformers import BitsAndBytesConfig

    if config.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quantization_type,
                              bnb_4bit_use_double_quant=config.double_quantization,
                              bnb_4bit_compute_dtype=compute_dtype(config.quantization_compute_dtype))


def model_kwargs(config) -> dict:
    return {"quantization_config": quantization_config(config)}


def prepare(model, config):
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return lora.prepare(model, config)


METHOD = Method(name="qlora", output_dir="adapter", prepare=prepare, save=save_model_and_tokenizer,
                model_kwargs=model_kwargs)

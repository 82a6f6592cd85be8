"""QLoRA: the base model loaded in 4-bit (nf4/fp4, double quantization) or 8-bit by bitsandbytes, LoRA on top.

The adapter it saves is a plain PEFT LoRA adapter: it also loads onto the full-precision base (chat, merge).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.methods import lora
from core.methods.base import ADAPTER, Field, Method
from core.models.loader import DTYPES, pick_device, pick_dtype

QUANTIZATION_TYPES = ("nf4", "fp4")


@dataclass
class QuantizationOptions:
    quantization_bit: int = 4  # 4 or 8
    quantization_type: str = "nf4"  # 4-bit: nf4 or fp4
    double_quantization: bool = True
    quantization_compute_dtype: str = "auto"


FIELDS = (
    Field("quantization_bit", "choice", (4, 8)),
    Field("quantization_type", "choice", QUANTIZATION_TYPES),
    Field("double_quantization", "bool"),
    Field("quantization_compute_dtype", "choice", DTYPES),
)


def check(config, check) -> None:
    lora.check(config, check)
    check(config.quantization_bit in (4, 8), "quantization_bit", "config.four_or_eight")
    check(
        config.quantization_type in QUANTIZATION_TYPES,
        "quantization_type",
        "config.one_of",
        choices=", ".join(QUANTIZATION_TYPES),
    )
    check(
        config.quantization_compute_dtype in DTYPES,
        "quantization_compute_dtype",
        "config.one_of",
        choices=", ".join(DTYPES),
    )


# A GLM-V model's vision tower and projector stay unquantized, as its output layer does: they are a small part of
# the weights (0.9B of GLM-4.1V's 10.3B), frozen, and every image passes through them.
KEPT_UNQUANTIZED_VISION = ["visual", "lm_head"]


def quantization_config(config):
    from transformers import BitsAndBytesConfig

    from core.models.loader import locate_model

    skip = (
        {"llm_int8_skip_modules": KEPT_UNQUANTIZED_VISION}
        if locate_model(config.model_name_or_path).vision_type
        else {}
    )
    if config.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True, **skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.quantization_type,
        bnb_4bit_use_double_quant=config.double_quantization,
        bnb_4bit_compute_dtype=pick_dtype(config.quantization_compute_dtype, pick_device()),
        **skip,
    )


def model_kwargs(config) -> dict:
    return {"quantization_config": quantization_config(config)}


def prepare(model, config):
    import logging

    from peft import prepare_model_for_kbit_training

    experts = lora.expert_parameters(model)
    if experts:
        # bitsandbytes quantizes nn.Linear layers only; transformers 5 fuses a MoE's routed experts into 3-D
        # parameters, which it leaves as they are. Say so: on GLM-4.5 they are most of the model.
        fused = [p for n, p in model.named_parameters() if any(n.endswith(e) for e in experts)]
        logging.getLogger("glm_workbench").warning(
            "qlora: bitsandbytes quantizes the Linear layers (attention, dense and shared-expert MLPs) to %s bits; "
            "the routed experts' fused weights (%s, %.1fM parameters) cannot be quantized by it and stay in %s, "
            "frozen, with LoRA on them",
            config.quantization_bit,
            ", ".join(experts),
            sum(p.numel() for p in fused) / 1e6,
            str(fused[0].dtype).replace("torch.", ""),
        )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return lora.prepare(model, config)


def weight_bytes(shape, config, compute_bytes: int, trainable: int) -> float:
    """The quantized linear layers at 4.5 bits (nf4/fp4 + block scales) or 8; what is not quantized (embeddings,
    lm_head, norms) is upcast to fp32 by prepare_model_for_kbit_training; the LoRA weights in fp32."""
    linear = shape.layers * shape.layer_linear_params
    bits = 4.5 if config.quantization_bit == 4 else 8
    return linear * bits / 8 + (shape.total_params - linear) * 4 + trainable * 4


METHOD = Method(
    name="qlora",
    vision=True,
    output_dir=ADAPTER,
    prepare=prepare,
    trainable_params=lora.trainable_params,
    options=QuantizationOptions,
    uses=lora.KEYS,
    fields=FIELDS,
    check=check,
    model_kwargs=model_kwargs,
    weight_bytes=weight_bytes,
    learning_rates=(2e-3, 2e-4),
)

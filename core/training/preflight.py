"""Settings that are valid on paper but cannot run here, refused before a run folder exists.

`RunConfig.validate` checks each value alone (pure, no environment). What depends on this machine or on the
model is checked here: a tracker in `report_to` that is not installed, and `lora_target` names the model does
not have. Both used to pass the form, the CLI and the YAML, create a run folder and then fail inside the run
("unexpected error (ValueError ...)"), and Resume re-read the same settings and failed again. Start (UI, CLI)
and Resume call `check_settings`, so each is refused with the same one-line message as any other setting.
"""

from __future__ import annotations

import importlib.util
import logging

from core.errors import ConfigError, ConfigProblem, config_error
from core.i18n import message
from core.methods import METHODS
from core.methods.lora import EXPERTS, ROUTER, expert_parameters, linear_layer_names
from core.models.loader import ModelLocation, locate_model, model_config
from core.stages import is_preference

log = logging.getLogger("glm_workbench")

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "swanlab": "swanlab", "wandb": "wandb", "mlflow": "mlflow"}


def check_settings(config) -> None:
    """Raise one ConfigError naming every setting that cannot run here."""
    problems = tracker_problems(config) + lora_target_problems(config)
    if problems:
        raise ConfigError(problems)


def tracker_problems(config) -> list[ConfigProblem]:
    return [
        ConfigProblem(
            "report_to",
            message("config.tracker_missing", tracker=name, package=TRACKER_PACKAGES[name]),
            show_value=False,
        )
        for name in config.trackers
        if name in TRACKER_PACKAGES and importlib.util.find_spec(TRACKER_PACKAGES[name]) is None
    ]


def lora_target_problems(config) -> list[ConfigProblem]:
    """lora_target names that match no module (or parameter) of the model, matched as peft matches them (the
    name itself, or the end of a dotted name). Checked on the model's shape alone (meta tensors: no weights are
    read); a model whose shape cannot be built here (a hub id, remote code) is left to the run."""
    method = METHODS.get(config.finetuning_type)
    if method is None or "lora_target" not in method.keys:
        return []
    spec = str(getattr(config, "lora_target", "all")).strip()
    if spec in ("", "all"):
        return []
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    names = model_names(config.model_name_or_path)
    if names is None:
        return []
    keywords = (EXPERTS, ROUTER) if expert_parameters(names.model) else ()  # a MoE's routed experts, its router
    missing = [
        target
        for target in wanted
        if target not in keywords and not any(n == target or n.endswith("." + target) for n in names)
    ]
    if not missing:
        return []
    available = ", ".join(linear_layer_names(names.model) + list(keywords)) or "-"
    return [
        ConfigProblem(
            "lora_target",
            message("config.lora_target_unknown", names=", ".join(missing), available=available),
            spec,
        )
    ]


class _Names(list):
    model = None


def model_names(reference: str) -> _Names | None:
    """Every module and parameter name of the model, from its config on the meta device; None if unknown."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        location = locate_model(reference)
        if location.kind == "hub":
            return None
        shape = model_config(location)
        if getattr(shape, "auto_map", None):
            return None  # building it would run the checkpoint's own code
        with torch.device("meta"):
            model_class = AutoModelForImageTextToText if location.vision_type else AutoModelForCausalLM
            model = model_class.from_config(shape)
    except Exception as exc:  # noqa: BLE001 - a shape we cannot build is checked by the run itself
        log.info("lora_target not checked before the run (%s: %s)", type(exc).__name__, exc)
        return None
    names = _Names(name for name, _ in model.named_modules() if name)
    names.extend(name for name, _ in model.named_parameters())
    names.model = model
    return names


def check_model_fits_config(location: ModelLocation, config) -> None:
    """Settings the model cannot honour, refused before a run starts: padding-free packing restarts 1D positions
    per sample, and ChatGLM-6B's positions are 2D (a position and a block position, from [gMASK] and <sop>);
    P-tuning v2 with gradient checkpointing on transformers' GLM-4 layers (our ChatGLM-6B keeps its prefix)."""
    if getattr(config, "packing", False) and location.is_chatglm_v1:
        raise config_error("packing", "config.packing_chatglm_v1")
    # transformers' GLM-4 layers drop a cache under gradient checkpointing (they would write it twice), and a
    # P-tuning prefix is a cache: the layers would then lose it while the mask still counts it.
    method = METHODS.get(config.finetuning_type)
    if method is not None and method.prefix_cache and config.gradient_checkpointing and not location.is_chatglm_v1:
        raise config_error("gradient_checkpointing", "config.ptuning_no_checkpointing")
    if location.vision_type:
        check_vision_run(location, config, method)


def check_vision_run(location: ModelLocation, config, method) -> None:
    """A GLM-V model trains supervised (image rows have no preference pairs here yet), by a method that declares
    it (Method.vision), on unpacked batches: packing's 1-D positions would replace its 3-D image positions."""
    if method is not None and not method.vision:
        supported = ", ".join(name for name, known in METHODS.items() if known.vision)
        raise config_error("finetuning_type", "config.vision_method", model=location.vision_type, methods=supported)
    if is_preference(config.stage):
        raise config_error("stage", "config.vision_stage", model=location.vision_type)
    if getattr(config, "packing", False):
        raise config_error("packing", "config.vision_packing", model=location.vision_type)

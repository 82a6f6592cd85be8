"""Load a GLM model and its tokenizer from 'demo', a local folder or a hub id, on the best device available."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from core.models.demo import DEMO_NAME, ensure_demo_model


log = logging.getLogger("glm_workbench")


class ModelError(ValueError):
    """A model that cannot be used, phrased for the user."""


def resolve_model_path(name_or_path: str, trust_remote_code: bool = False) -> str:
    """'demo' -> the built demo folder; a THUDM ChatGLM2/3 / glm-4-9b-chat folder -> its native conversion
    (made once); another existing folder -> itself; 'org/name' -> passed on as a hub id."""
    from core.models import chatglm

    name_or_path = (name_or_path or "").strip()
    if name_or_path in ("", DEMO_NAME):
        return str(ensure_demo_model())
    check_model_reference(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if chatglm.is_chatglm_checkpoint(path):
            if chatglm.is_chatglm_v1(chatglm.read_config(path)):
                if trust_remote_code:
                    log.warning("%s: ChatGLM-6B (v1) runs its own remote code (trust_remote_code is on)", path)
                    return str(path)
                raise ModelError(f"{path}: ChatGLM-6B (v1) is a different architecture (2D positions, GeLU) with "
                                 "no native transformers class; it only runs through its own code: enable "
                                 "trust_remote_code if you trust this checkpoint")
            try:
                return str(chatglm.ensure_converted(path))
            except (chatglm.ConversionError, KeyError) as exc:
                raise ModelError(f"{path}: cannot convert this ChatGLM checkpoint: {exc}") from None
        return str(path)
    return name_or_path  # a hub id


def check_model_reference(name_or_path: str) -> None:
    """Refuse, before a run starts, a model that cannot be found: a missing folder, a file, a folder without
    config.json. Cheap (no conversion, no download): hub ids pass and are checked when they load."""
    name_or_path = (name_or_path or "").strip()
    if name_or_path in ("", DEMO_NAME):
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json in this folder: is it a model folder?")
    elif path.exists():
        raise ModelError(f"{path}: a model must be a folder, not a file")
    elif not (name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))):
        raise ModelError(f"{name_or_path}: model folder not found")


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(precision: str, device: str):
    """'auto': bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU."""
    import torch

    if precision == "fp32" or (precision == "auto" and device == "cpu"):
        return torch.float32
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the tokenizer: {exc}") from None


def load_model(path: str, dtype=None, device: str | None = None, quantization_config=None,
               trust_remote_code: bool = False):
    """Load the causal LM in eval mode on `device` (default: GPU if present), optionally quantized."""
    from transformers import AutoModelForCausalLM

    import core.models.glm1  # noqa: F401  registers the native ChatGLM-6B (v1) class ("glm1_workbench")

    device = device or pick_device()
    kwargs = {"dtype": dtype or pick_dtype("auto", device), "trust_remote_code": trust_remote_code}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the model: {exc}") from None
    return (model if quantization_config is not None else model.to(device)).eval()


def configure_threads() -> int:
    """One torch thread per core, no more: oversubscribed threads make CPU training many times slower."""
    import torch

    wanted = int(os.environ.get("GLM_WORKBENCH_THREADS", "0")) or max(1, os.cpu_count() or 1)
    torch.set_num_threads(wanted)
    return wanted

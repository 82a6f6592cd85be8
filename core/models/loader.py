"""Load a GLM model and its tokenizer from 'demo', a local folder or a hub id, on the best device available.

Two steps, kept apart: `locate_model` says where a reference points and what it is, reading at most a
config.json (the form's previews and the memory estimate use only this); `prepare_model` makes it loadable,
building the demo model or converting a THUDM checkpoint once, which writes to disk.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import ModelError
from core.models import chatglm, demo, peft_moe, vision
from core.models.demo import DEMOS, default_demo_dir, ensure_demo_model

log = logging.getLogger("glm_workbench")


@dataclass(frozen=True)
class ModelLocation:
    """Where a model reference points and what it is, found without writing anything.

    kind: "demo" (the embedded demo model's folder), "folder" (a native model folder), "thudm" (a THUDM
    checkpoint -- ChatGLM-6B, ChatGLM2/3, glm-4-9b-chat -- that is converted before loading) or "hub" (an id
    passed on to transformers).
    """

    reference: str
    kind: str
    path: str
    variant: str = ""  # for "thudm": chatglm-6b, chatglm2, chatglm3 or glm4-chat

    @property
    def config_dict(self) -> dict:
        return chatglm.read_config(self.path) if self.kind != "hub" else {}

    @property
    def is_chatglm_v1(self) -> bool:
        """ChatGLM-6B: THUDM's checkpoint, or a folder of the native class it converts to (a conversion, a full or
        freeze run's model)."""
        from core.models.glm1.configuration import MODEL_TYPE  # glm1 imports torch and transformers

        native_v1 = self.kind == "folder" and self.config_dict.get("model_type") == MODEL_TYPE
        return self.variant == chatglm.V1 or native_v1

    @property
    def vision_type(self) -> str:
        """ "glm4v" / "glm4v_moe" for a GLM-V model (a folder's from its config.json; a demo's from its recipe, so
        an unbuilt demo is known without building it), "" for a text model or a hub id."""
        if self.kind == "demo":
            model_class = DEMOS[self.reference].model_class
            return next((kind for kind, name in vision.VISION_MODEL_TYPES.items() if name == model_class), "")
        return vision.vision_type(self.config_dict)


def locate_model(name_or_path: str) -> ModelLocation:
    """Pure and cheap: which model a reference names (reads at most config.json). Refuses what cannot be used:
    a missing folder, a file, a folder without config.json."""
    name_or_path = (name_or_path or "").strip()
    if name_or_path in DEMOS or not name_or_path:
        name = name_or_path or "demo"
        return ModelLocation(name, "demo", str(default_demo_dir(name)))
    check_model_reference(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return ModelLocation(name_or_path, "hub", name_or_path)
    config = chatglm.read_config(path)
    if config.get("model_type") != "chatglm":
        return ModelLocation(name_or_path, "folder", str(path))
    return ModelLocation(name_or_path, "thudm", str(path), chatglm.detect_variant(path, config))


def prepare_model(name_or_path: str, trust_remote_code: bool = False) -> str:
    """The folder (or hub id) to load, made ready first: the demo model built, a THUDM ChatGLM-6B / ChatGLM2/3 /
    glm-4-9b-chat checkpoint converted once into the workbench home (under a lock, into a staging folder).

    `trust_remote_code` only ever reaches transformers, for a folder or hub id the workbench has no class for; a
    THUDM checkpoint never runs its own code (it is converted), so there it is ignored, saying so."""
    location = locate_model(name_or_path)
    if location.kind == "demo":
        return str(ensure_demo_model(name=location.reference))
    if location.kind == "thudm":
        if trust_remote_code:
            log.warning(
                "%s: trust_remote_code is ignored: this checkpoint is converted to a native class and its own code "
                "never runs",
                location.path,
            )
        return str(chatglm.ensure_converted(location.path))
    return location.path


def _demo_unbuilt(location: ModelLocation) -> bool:
    return location.kind == "demo" and not demo.is_demo_model(location.path)


@lru_cache(maxsize=16)
def reading_tokenizer(location: ModelLocation):
    """The tokenizer for previews (sample render, length histogram), and nothing written for it: a THUDM
    checkpoint's is converted in memory, and a demo model not built yet lends the tokenizer its build would save
    (trained in memory in about a second, the same tokenizer: its recipe is deterministic), so the first page
    on a fresh machine shows a sample without building the model."""
    if location.kind == "thudm":
        return chatglm.convert_tokenizer(location.path, location.variant)
    if _demo_unbuilt(location):
        return demo.build_tokenizer(DEMOS[location.reference])
    return load_tokenizer(location.path)


@lru_cache(maxsize=4)
def reading_image_processor(location: ModelLocation):
    """A GLM-V model's image processor for previews: a demo not built yet lends the one its build would save."""
    if _demo_unbuilt(location):
        return vision.demo_image_processor(DEMOS[location.reference].image_size)
    return vision.load_image_processor(location.path)


def model_config(location: ModelLocation):
    """The model's transformers config, read from its config.json alone (the memory estimate); for a demo model
    not built yet, the config its build would write (nothing is built for an estimate)."""
    from transformers import AutoConfig  # heavy: the estimate imports transformers only when it runs

    if location.kind == "thudm":
        return chatglm.shape_config(location.path)
    if _demo_unbuilt(location):
        return demo.demo_config(DEMOS[location.reference], reading_tokenizer(location))
    register_native_classes()
    return AutoConfig.from_pretrained(location.path)


def register_native_classes() -> None:
    """Make the Auto classes know the workbench's own model classes (ChatGLM-6B's "glm1_workbench"): needed
    before any Auto class reads a converted v1 folder's config.json, the tokenizer's included."""
    import core.models.glm1  # noqa: F401  registers on import


def check_model_reference(name_or_path: str) -> None:
    """Refuse, before a run starts, a model that cannot be found: a missing folder, a file, a folder without
    config.json. Cheap (no conversion, no download): hub ids pass and are checked when they load."""
    name_or_path = (name_or_path or "").strip()
    if name_or_path in DEMOS or not name_or_path:
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError("model.no_config_json", folder=str(path))
    elif path.exists():
        raise ModelError("model.is_file", folder=str(path))
    elif not (name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))):
        raise ModelError("model.not_found", folder=name_or_path)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = ("auto", "fp32", "bf16", "fp16")  # every setting that names a dtype offers these


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

    register_native_classes()
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError("model.tokenizer_failed", folder=str(path), detail=str(exc).splitlines()[0]) from None


def load_model(
    path: str,
    dtype=None,
    device: str | None = None,
    quantization_config=None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """Load the causal LM (a GLM-V model: its image-text class) in eval mode on `device` (default: GPU if present),
    optionally quantized. `attn_implementation`: transformers' name (None: its default, PyTorch's sdpa)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    register_native_classes()
    peft_moe.install()  # before any adapter is attached to the model: MoE targets kept as we write them
    device = device or pick_device()
    kwargs = {"dtype": dtype or pick_dtype("auto", device), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    try:
        with_images = Path(path).is_dir() and vision.vision_type(chatglm.read_config(path))
        model_class = AutoModelForImageTextToText if with_images else AutoModelForCausalLM
        model = model_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError("model.load_failed", folder=str(path), detail=str(exc).splitlines()[0]) from None
    return (model if quantization_config is not None else model.to(device)).eval()


def configure_threads() -> int:
    """One torch thread per core, no more: oversubscribed threads make CPU training many times slower."""
    import torch

    wanted = int(os.environ.get("GLM_WORKBENCH_THREADS", "0")) or max(1, os.cpu_count() or 1)
    torch.set_num_threads(wanted)
    return wanted

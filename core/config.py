"""One run's configuration: a flat dataclass whose keys follow LLaMA-Factory / TrainingArguments names.

The UI form, the CLI (`train CONFIG.yaml --set key=value`) and the YAML file are three views of this one
object, so a run started anywhere can be reproduced from its saved `config.yaml`. The keys common to every run
are declared here; each method adds its own (core/methods/<name>.py, `options`), so `RunConfig` is the common
settings plus every method's options, still one flat set of keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from core.data.formats import FORMATS, parse_columns
from core.data.template import TEMPLATES
from core.errors import ConfigError, ConfigProblem, DataError, config_error
from core.i18n import message
from core.methods import METHODS, get_method
from core.models.loader import DTYPES
from core.stages import STAGES, SUPERVISED, get_stage, is_preference

LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
TRACKERS = ("none", "tensorboard", "swanlab", "wandb", "mlflow")  # report_to, as in transformers and LLaMA-Factory
# How several processes share the work: DDP (a whole model per process) or FSDP (transformers' FSDP2: each
# process holds a shard of every decoder layer). FSDP trains the SFT runs of the methods that say so (Method.fsdp).
DISTRIBUTED = ("ddp", "fsdp")


@dataclass
class CommonSettings:
    # model
    model_name_or_path: str = "demo"
    trust_remote_code: bool = False  # only for checkpoints without a native class
    template: str = "auto"  # by the tokenizer: glm4_moe, glm47, glmz1, glm4, chatglm3, chatglm2, chatglm (ChatGLM-6B)
    # GLM-4.5 generation (template glm4_moe): false trains without the reasoning, as the model's own template renders
    # it with enable_thinking=False (/nothink, an empty think block)
    enable_thinking: bool = True
    # MoE models: weight of the routers' balance loss added to the training loss (core/training/router_balance.py;
    # LLaMA-Factory's moe_aux_loss_coef); 0 turns it off. Dense models have no router: ignored.
    router_aux_loss_coef: float = 0.001
    finetuning_type: str = "lora"  # a method of core/methods/
    # data
    dataset: str = "identity"
    dataset_format: str = "auto"
    columns: str = ""  # column mapping for files named differently: "question=instruction, answer=output"
    eval_dataset: str = ""  # a separate validation file (instead of val_size)
    cutoff_len: int = 512
    val_size: float = 0.0  # a fraction of the data, or a whole number of samples, held out for validation
    max_samples: int = 0
    packing: bool = False  # padding-free: a batch's samples in one row, positions restarting, no cross-attention
    # GLM-V models (image rows): each image's pixel budget for the image processor (LLaMA-Factory's keys; 0 keeps
    # the checkpoint's own), and whether the vision tower and the projector (merger) stay frozen, as by default there
    image_max_pixels: int = 0
    image_min_pixels: int = 0
    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = True
    # training
    learning_rate: float = 2e-4
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # wins over warmup_ratio when set
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    neftune_noise_alpha: float = 0.0
    logging_steps: int = 1
    eval_steps: int = 0  # 0: evaluate once per epoch (when there is a validation set)
    early_stopping_patience: int = 0  # stop after this many evaluations without improvement; 0: off
    early_stopping_threshold: float = 0.0
    save_steps: int = 0  # checkpoint every N steps; 0: no intermediate checkpoints
    save_total_limit: int = 3
    seed: int = 42
    nproc_per_node: int = 1  # >1: the run is launched with torchrun on this many processes (GPUs, or CPU cores)
    distributed: str = "ddp"  # with several processes: ddp (a model each) or fsdp (the model sharded across them)
    precision: str = "auto"
    gradient_checkpointing: bool = False
    fused_loss: bool = True  # the loss from hidden states chunk by chunk: the [tokens x vocab] logits never exist
    # speed and memory (core/training/speed.py): each one flag; the run's log names the ones in use
    auto_batch_size: bool = False  # the largest micro-batch that fits, accumulation keeping batch x accumulation
    offload_activations: bool = False  # with gradient checkpointing: the kept activations wait in CPU memory
    torch_compile: bool = False  # torch.compile the model (a GPU's win; compiling costs minutes on the CPU)
    use_liger_kernel: bool = False  # Liger's Triton RMSNorm, SwiGLU and RoPE (CUDA, `pip install liger-kernel`)
    report_to: str = "none"  # experiment trackers, comma-separated: tensorboard (into RUN/tensorboard), swanlab, ...
    # the training stage (core/stages/) and the preference stages' shared keys, with LLaMA-Factory's names
    stage: str = SUPERVISED  # sft; the preference stages (dpo, orpo, kto, ...) learn from chosen / rejected answers
    pref_beta: float = 0.1  # dpo/kto: how far the model may move from the reference; orpo: the odds-ratio weight;
    # simpo: the scale of its reward (beta x the answer's mean token log-probability)
    pref_loss: str = "sigmoid"  # dpo: sigmoid (DPO) or ipo
    pref_ftx: float = 0.0  # dpo: weight of the SFT loss on the chosen answers, mixed in
    kto_chosen_weight: float = 1.0  # kto: weight of the desirable answers' loss
    kto_rejected_weight: float = 1.0  # kto: weight of the undesirable answers' loss
    # continued (incremental) training
    adapter_name_or_path: str = ""  # an adapter to keep training instead of a new one
    parent_run: str = ""  # the run this one continues, recorded for the lineage
    # output
    output_dir: str = ""  # an empty or new folder for this run; default: a fresh folder under the workspace
    run_name: str = ""


_OPTIONS = tuple(method.options for method in METHODS.values() if method.options is not None)
_STAGE_OPTIONS = tuple(stage.options for stage in STAGES.values() if stage.options is not None)


@dataclass
class RunConfig(*reversed(_STAGE_OPTIONS), *reversed(_OPTIONS), CommonSettings):  # type: ignore[misc]
    """Every setting of a run: the common ones first, then each method's own, then each stage's (registry order)."""

    # ---- views -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a plain dict, converting types and rejecting unknown keys with a suggestion."""
        known = {f.name: f for f in fields(cls)}
        problems: list[ConfigProblem] = []
        values: dict[str, Any] = {}
        data = dict(data or {})
        if str(data.get("per_device_train_batch_size", "")).strip().lower() == "auto":
            # `per_device_train_batch_size: auto`: the default micro-batch times the accumulation is kept as the
            # effective batch, and the run picks the largest micro-batch that fits.
            del data["per_device_train_batch_size"]
            data["auto_batch_size"] = True
        for key, raw in data.items():
            key = str(key)
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                problem = (
                    message("config.unknown_key_suggest", suggestion=close[0])
                    if close
                    else message("config.unknown_key")
                )
                problems.append(ConfigProblem(key, problem, show_value=False))
                continue
            default = known[key].default
            try:
                values[key] = _coerce(raw, default)
            except (TypeError, ValueError):
                problems.append(
                    ConfigProblem(
                        key,
                        message("config.expected_type", type=type(default).__name__, got=repr(raw)),
                        show_value=False,
                    )
                )
        config = cls(**values)
        if problems:  # report the value problems of the keys that were read, too: one round trip for the user
            raise ConfigError(problems + config.problems())
        return config

    @property
    def trackers(self) -> list[str]:
        """The experiment trackers named in report_to ("none" names none)."""
        return [name.strip() for name in self.report_to.split(",") if name.strip() and name.strip() != "none"]

    def replace(self, **changes: Any) -> RunConfig:
        merged = self.to_dict()
        merged.update(changes)
        return RunConfig.from_dict(merged)

    # ---- validation --------------------------------------------------------------------------------------
    def problems(self) -> list[ConfigProblem]:
        """Every wrong value, one problem each; empty when the config is usable."""
        found: list[ConfigProblem] = []

        def check(ok: bool, key: str, code: str, **params: Any) -> None:
            if not ok:
                found.append(ConfigProblem(key, message(code, **params), getattr(self, key)))

        check(bool(self.model_name_or_path.strip()), "model_name_or_path", "config.model_required")
        check(bool(self.dataset.strip()), "dataset", "config.dataset_required")
        check(self.finetuning_type in METHODS, "finetuning_type", "config.one_of", choices=", ".join(METHODS))
        check(self.learning_rate > 0, "learning_rate", "config.greater_than", limit=0)
        check(self.learning_rate < 1, "learning_rate", "config.learning_rate_below_one")
        check(self.num_train_epochs > 0 or self.max_steps > 0, "num_train_epochs", "config.epochs_or_steps")
        check(self.max_steps == -1 or self.max_steps > 0, "max_steps", "config.max_steps")
        check(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "config.at_least", limit=1)
        check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "config.at_least", limit=1)
        check(self.cutoff_len >= 8, "cutoff_len", "config.cutoff_len")
        check(
            0 <= self.val_size < 1 or self.val_size >= 1 and float(self.val_size).is_integer(),
            "val_size",
            "config.val_size",
        )
        check(self.max_samples >= 0, "max_samples", "config.max_samples")
        check(self.image_max_pixels >= 0, "image_max_pixels", "config.zero_or_more")
        check(self.image_min_pixels >= 0, "image_min_pixels", "config.zero_or_more")
        check(
            not (self.image_max_pixels and self.image_min_pixels) or self.image_min_pixels <= self.image_max_pixels,
            "image_min_pixels",
            "config.image_pixels_order",
            limit=self.image_max_pixels,
        )
        check(
            self.lr_scheduler_type in LR_SCHEDULERS,
            "lr_scheduler_type",
            "config.one_of",
            choices=", ".join(LR_SCHEDULERS),
        )
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "config.fraction_open")
        check(self.weight_decay >= 0, "weight_decay", "config.zero_or_more")
        check(self.router_aux_loss_coef >= 0, "router_aux_loss_coef", "config.zero_or_more")
        check(self.max_grad_norm >= 0, "max_grad_norm", "config.zero_off_or_more")
        check(self.logging_steps >= 1, "logging_steps", "config.at_least", limit=1)
        check(self.save_steps >= 0, "save_steps", "config.save_steps")
        check(self.save_total_limit >= 1, "save_total_limit", "config.at_least", limit=1)
        check(0 <= self.seed < 2**32, "seed", "config.seed_range", limit=2**32 - 1)  # numpy's and torch's range
        check(self.nproc_per_node >= 1, "nproc_per_node", "config.at_least", limit=1)
        check(self.distributed in DISTRIBUTED, "distributed", "config.one_of", choices=", ".join(DISTRIBUTED))
        fsdp_methods = [name for name, method in METHODS.items() if method.fsdp]
        check(
            self.distributed != "fsdp" or self.finetuning_type in fsdp_methods or self.finetuning_type not in METHODS,
            "distributed",
            "config.fsdp_methods",
            choices=", ".join(fsdp_methods),
        )
        check(
            self.distributed != "fsdp" or not is_preference(self.stage),
            "distributed",
            "config.fsdp_sft_only",
            stage=SUPERVISED,
            choices=", ".join(name for name in STAGES if is_preference(name)),
        )
        check(self.warmup_steps >= 0, "warmup_steps", "config.zero_or_more")
        check(self.eval_steps >= 0, "eval_steps", "config.eval_steps")
        check(self.neftune_noise_alpha >= 0, "neftune_noise_alpha", "config.zero_off_or_more")
        check(self.early_stopping_patience >= 0, "early_stopping_patience", "config.zero_off_or_more")
        check(
            self.early_stopping_patience == 0 or self.val_size > 0 or bool(self.eval_dataset),
            "early_stopping_patience",
            "config.needs_validation",
        )
        check(self.precision in DTYPES, "precision", "config.one_of", choices=", ".join(DTYPES))
        check(
            all(name in TRACKERS for name in self.trackers)
            and (self.trackers or self.report_to.strip() in ("", "none")),
            "report_to",
            "config.one_of",
            choices=", ".join(TRACKERS),
        )
        check(
            not self.offload_activations or self.gradient_checkpointing,
            "offload_activations",
            "config.needs_gradient_checkpointing",
        )
        self._check_stage(check)
        if self.finetuning_type in METHODS:
            METHODS[self.finetuning_type].check(self, check)

        check(
            self.template == "auto" or self.template in TEMPLATES,
            "template",
            "config.auto_or_one_of",
            choices=", ".join(TEMPLATES),
        )

        check(
            self.dataset_format == "auto" or self.dataset_format in FORMATS,
            "dataset_format",
            "config.auto_or_one_of",
            choices=", ".join(FORMATS),
        )
        try:
            parse_columns(self.columns)
        except DataError as exc:
            found.append(ConfigProblem("columns", exc.message, show_value=False))
        return _finite_first(self, found)

    def _check_stage(self, check) -> None:
        """The stage's name and every stage's keys; then what the chosen stage asks of the rest of the config."""
        check(self.stage in STAGES, "stage", "config.one_of", choices=", ".join(STAGES))
        check(self.pref_beta > 0, "pref_beta", "config.greater_than", limit=0)
        for stage in STAGES.values():
            stage.check_keys(self, check)
        if not is_preference(self.stage):
            return  # what follows only concerns a preference stage
        stage = get_stage(self.stage)
        accepted = [name for name, method in METHODS.items() if stage.accepts(method)]
        check(
            self.finetuning_type in accepted or self.finetuning_type not in METHODS,
            "finetuning_type",
            "config.stage_methods",
            stage=self.stage,
            choices=", ".join(accepted),
        )
        check(not self.packing, "packing", "config.stage_no_packing", stage=self.stage)
        defaults = RunConfig.__dataclass_fields__
        for owner in STAGES.values():
            for key in owner.only_keys if owner is not stage else ():
                same = getattr(self, key) == defaults[key].default
                check(same, key, "config.stage_only", owner=owner.name, stage=self.stage)
        stage.check(self, check)

    def validate(self) -> RunConfig:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


def _finite_first(config: RunConfig, found: list[ConfigProblem]) -> list[ConfigProblem]:
    """inf and nan pass comparisons like `>= 0` and fail late (transformers' ValueError inside the run): every
    number must be finite, and a key that is not says only that."""
    infinite = [
        f.name
        for f in fields(config)
        if isinstance(getattr(config, f.name), float) and not math.isfinite(getattr(config, f.name))
    ]
    kept = [problem for problem in found if problem.key not in infinite]
    return [ConfigProblem(key, message("config.finite"), getattr(config, key)) for key in infinite] + kept


def _coerce(raw: Any, default: Any) -> Any:
    """Convert YAML/CLI/UI input to the default's type ('1e-4' -> 1e-4, '3' -> 3, 'true' -> True)."""
    if isinstance(default, bool):
        if isinstance(raw, str):
            lowered = raw.strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError(raw)
        return bool(raw)
    if isinstance(default, int):
        if isinstance(raw, bool):
            raise TypeError(raw)
        value = float(raw)
        if not value.is_integer():
            raise ValueError(raw)
        return int(value)
    if isinstance(default, float):
        if isinstance(raw, bool):
            raise TypeError(raw)
        return float(raw)
    if isinstance(default, str):
        if raw is None:
            return ""
        if isinstance(raw, (dict, list)):
            raise TypeError(raw)
        return str(raw)
    return raw


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['key=value', ...] from `--set` into a dict (values parsed as YAML scalars)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise config_error("--set", "config.set_syntax", pair=pair)
        key, value = pair.split("=", 1)
        try:
            result[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            result[key.strip()] = value
    return result


# LLaMA-Factory's stage for pairs: its `pref_loss` picks DPO's loss, or ORPO's or SimPO's (our stages of those names).
LLAMAFACTORY_PAIR_STAGE = "dpo"
# LLaMA-Factory SFT keys that have no meaning here: accepted, and reported by name.
LLAMAFACTORY_IGNORED = (
    "do_train",
    "overwrite_cache",
    "preprocessing_num_workers",
    "plot_loss",
    "overwrite_output_dir",
    "ddp_timeout",
    "dataloader_num_workers",
    "dataset_dir",
    "per_device_eval_batch_size",
    "eval_strategy",
    "save_only_model",
    "flash_attn",
    "resume_from_checkpoint",
    "tokenized_path",
    "packing_side",
    "do_eval",
)


def from_llamafactory(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Translate a `llamafactory-cli train` config (sft, dpo, kto; ORPO and SimPO are its dpo stage with pref_loss
    orpo or simpo) into ours; returns (our keys, notes on what was ignored)."""
    data = dict(data)
    notes: list[str] = []
    stage = data.pop("stage", SUPERVISED)
    if stage == LLAMAFACTORY_PAIR_STAGE and is_preference(str(data.get("pref_loss"))):  # its orpo and simpo losses
        stage = data.pop("pref_loss")
    if stage not in STAGES:
        raise config_error("stage", "config.stage_unsupported", value=stage, show_value=True, choices=", ".join(STAGES))
    data["stage"] = stage
    ignored = [key for key in LLAMAFACTORY_IGNORED if key in data]
    for key in ignored:
        data.pop(key)
    if ignored:
        notes.append(str(message("config.llamafactory_ignored", keys=", ".join(ignored))))
    if "moe_aux_loss_coef" in data:
        data["router_aux_loss_coef"] = data.pop("moe_aux_loss_coef")
    if data.pop("enable_liger_kernel", False):
        data["use_liger_kernel"] = True
    if data.pop("bf16", False):
        data["precision"] = "bf16"
    if data.pop("fp16", False):
        data["precision"] = "fp16"
    if data.get("finetuning_type", "lora") == "lora" and data.get("quantization_bit"):
        data["finetuning_type"] = "qlora"
    if isinstance(data.get("dataset"), str) and "," in data["dataset"]:
        raise config_error("dataset", "config.one_dataset", value=data["dataset"], show_value=True)
    # LLaMA-Factory's GLM template names: glm4_moe (GLM-4.5/4.6), glm4_7 (GLM-4.7 / 4.7-Flash) and glmz1 (GLM-Z1-0414)
    # are ours too.
    if data.get("template") in ("glm4", "glm4_moe", "glm4_7", "glmz1", "chatglm3", "chatglm2", "chatglm", None):
        renamed = {"glm4_7": "glm47", None: "auto"}
        data["template"] = renamed.get(data.get("template"), data.get("template"))
    if "lora_target" in data and isinstance(data["lora_target"], str):
        data["lora_target"] = data["lora_target"].replace(" ", "")
    return data, notes


# Keys only our configs have (a saved config.yaml holds every key): such a file is ours even with a `stage`.
OWN_KEYS = ("precision", "dataset_format", "fused_loss", "nproc_per_node", "distributed")


def is_llamafactory_config(data: dict[str, Any]) -> bool:
    if any(key in data for key in OWN_KEYS):
        return False
    return "stage" in data or "do_train" in data


def load_yaml_with_notes(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, list[str]]:
    """Read a config (ours, or LLaMA-Factory's SFT YAML); returns it with notes about translated/ignored keys."""
    path = Path(path)
    if path.is_dir():
        raise config_error(str(path), "config.file_is_directory")
    if not path.is_file():
        raise config_error(str(path), "config.file_not_found")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise config_error(str(path), "config.file_not_utf8") from None
    except yaml.YAMLError as exc:
        raise config_error(str(path), "config.invalid_yaml", detail=str(exc)) from None
    if data is None:
        raise config_error(str(path), "config.file_empty")
    if not isinstance(data, dict):
        raise config_error(str(path), "config.not_mapping", got=type(data).__name__)
    notes: list[str] = []
    if is_llamafactory_config(data):
        data, notes = from_llamafactory(data)
    data.update(overrides or {})
    return RunConfig.from_dict(data), notes


def load_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    return load_yaml_with_notes(path, overrides)[0]


def method_keys(config: RunConfig) -> set[str]:
    """Keys that belong to other methods than the config's: left out of the command preview."""
    own = set(get_method(config.finetuning_type).keys) if config.finetuning_type in METHODS else set()
    return {key for method in METHODS.values() for key in method.keys} - own


def command_line(config: RunConfig) -> str:
    """The CLI line that starts this run: every key that differs from the defaults as --set."""
    defaults = RunConfig().to_dict()
    foreign = method_keys(config)
    changed = [
        (key, value) for key, value in config.to_dict().items() if defaults.get(key) != value and key not in foreign
    ]
    parts = ["glm-workbench train"] + [f"--set {key}={_shell_value(value)}" for key, value in changed]
    return " \\\n    ".join(parts)


def _shell_value(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return shlex.quote(text)


def yaml_text(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def save_yaml(config: RunConfig, path: str | Path) -> None:
    from core.files import write_text_atomic

    write_text_atomic(Path(path), yaml_text(config))

"""One run's configuration: a flat dataclass whose keys follow LLaMA-Factory / TrainingArguments names.

The UI form, the CLI (`train CONFIG.yaml --set key=value`) and the YAML file are three views of this one
object, so a run started anywhere can be reproduced from its saved `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

FINETUNING_TYPES = ("lora", "qlora", "freeze", "full", "ptuning_v2", "distill")
DISTILL_MODES = ("auto", "logits", "sequence")
QUANTIZATION_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("auto", "fp32", "bf16", "fp16")
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """Raised with one line per wrong value, each naming its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class RunConfig:
    # model
    model_name_or_path: str = "demo"
    trust_remote_code: bool = False  # only for checkpoints without a native class (ChatGLM-6B v1)
    template: str = "auto"  # from the model's tokenizer: glm4, chatglm3 or chatglm2
    # method
    finetuning_type: str = "lora"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target: str = "all"
    use_dora: bool = False
    use_rslora: bool = False
    quantization_bit: int = 4  # qlora: 4 or 8
    quantization_type: str = "nf4"  # qlora 4-bit: nf4 or fp4
    double_quantization: bool = True
    quantization_compute_dtype: str = "auto"
    freeze_trainable_layers: int = 2  # freeze: train the last N layers (negative: the first N)
    freeze_extra_modules: str = ""  # freeze: also train parameters whose names contain these, comma-separated
    pre_seq_len: int = 16  # ptuning_v2: prefix length
    prefix_projection: bool = False  # ptuning_v2: reparameterise the prefix through an MLP while training
    teacher_adapter: str = ""  # distill: the teacher is model_name_or_path with this adapter (or run) merged in
    student_model: str = "auto"  # distill: "auto" (the teacher's every other layer) or a local model folder
    distill_alpha: float = 0.5  # distill: weight of the KL term against cross-entropy
    distill_temperature: float = 2.0
    distill_mode: str = "auto"  # auto: logits with a shared tokenizer, else sequence (teacher-written answers)
    # data
    dataset: str = "identity"
    dataset_format: str = "auto"
    columns: str = ""  # column mapping for files named differently: "question=instruction, answer=output"
    eval_dataset: str = ""  # a separate validation file (instead of val_size)
    cutoff_len: int = 512
    val_size: float = 0.0  # a fraction of the data, or a whole number of samples, held out for validation
    max_samples: int = 0
    packing: bool = False  # padding-free: a batch's samples in one row, positions restarting, no cross-attention
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
    precision: str = "auto"
    gradient_checkpointing: bool = False
    # continued (incremental) training
    adapter_name_or_path: str = ""  # an adapter to keep training (LoRA/QLoRA/P-tuning v2) instead of a new one
    parent_run: str = ""  # the run this one continues, recorded for the lineage
    # output
    output_dir: str = ""
    run_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- views -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not data["extra"]:
            data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Build from a plain dict, converting types and rejecting unknown keys with a suggestion."""
        known = {f.name: f for f in fields(cls)}
        problems: list[str] = []
        values: dict[str, Any] = {}
        for key, raw in (data or {}).items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"{key}: unknown key{hint}")
                continue
            try:
                values[key] = _coerce(raw, _default_of(known[key]))
            except (TypeError, ValueError):
                type_name = type(_default_of(known[key])).__name__
                problems.append(f"{key}: expected {type_name}, got {raw!r}")
        config = cls(**values)
        if problems:  # report the value problems of the keys that were read, too: one round trip for the user
            raise ConfigError(problems + config.problems())
        return config

    def replace(self, **changes: Any) -> "RunConfig":
        merged = self.to_dict()
        merged.update(changes)
        return RunConfig.from_dict(merged)

    # ---- validation --------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every wrong value, one message each; empty when the config is usable."""
        found: list[str] = []

        def check(ok: bool, key: str, message: str) -> None:
            if not ok:
                found.append(f"{key}: {message} (got {getattr(self, key)!r})")

        check(bool(self.model_name_or_path.strip()), "model_name_or_path", "must name a model folder or 'demo'")
        check(bool(self.dataset.strip()), "dataset", "must name a demo dataset or a data file")
        check(self.finetuning_type in FINETUNING_TYPES, "finetuning_type", f"must be one of {', '.join(FINETUNING_TYPES)}")
        check(self.learning_rate > 0, "learning_rate", "must be greater than 0")
        check(self.learning_rate < 1, "learning_rate", "must be below 1 (typical: 1e-5 to 1e-3)")
        check(self.num_train_epochs > 0 or self.max_steps > 0, "num_train_epochs", "must be > 0 unless max_steps is set")
        check(self.max_steps == -1 or self.max_steps > 0, "max_steps", "must be -1 (use epochs) or a positive number")
        check(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be at least 1")
        check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be at least 1")
        check(self.cutoff_len >= 8, "cutoff_len", "must be at least 8 tokens")
        check(0 <= self.val_size < 1 or self.val_size >= 1 and float(self.val_size).is_integer(),
              "val_size", "must be a fraction in [0, 1) or a whole number of samples")
        check(self.max_samples >= 0, "max_samples", "must be 0 (all) or a positive number")
        check(self.lr_scheduler_type in LR_SCHEDULERS, "lr_scheduler_type", f"must be one of {', '.join(LR_SCHEDULERS)}")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        check(self.max_grad_norm >= 0, "max_grad_norm", "must be 0 (off) or more")
        check(self.logging_steps >= 1, "logging_steps", "must be at least 1")
        check(self.save_steps >= 0, "save_steps", "must be 0 (only at the end) or more")
        check(self.save_total_limit >= 1, "save_total_limit", "must be at least 1")
        check(self.nproc_per_node >= 1, "nproc_per_node", "must be at least 1")
        check(self.warmup_steps >= 0, "warmup_steps", "must be 0 or more")
        check(self.eval_steps >= 0, "eval_steps", "must be 0 (once per epoch) or more")
        check(self.neftune_noise_alpha >= 0, "neftune_noise_alpha", "must be 0 (off) or more")
        check(self.early_stopping_patience >= 0, "early_stopping_patience", "must be 0 (off) or more")
        check(self.early_stopping_patience == 0 or self.val_size > 0 or bool(self.eval_dataset),
              "early_stopping_patience", "needs a validation set: set val_size or eval_dataset")
        check(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.finetuning_type in ("lora", "qlora"):
            check(self.lora_rank >= 1, "lora_rank", "must be at least 1")
            check(self.lora_alpha > 0, "lora_alpha", "must be greater than 0")
            check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
            check(bool(self.lora_target.strip()), "lora_target", "must be 'all' or a comma-separated list of module names")
        if self.finetuning_type == "qlora":
            check(self.quantization_bit in (4, 8), "quantization_bit", "must be 4 or 8")
            check(self.quantization_type in QUANTIZATION_TYPES, "quantization_type",
                  f"must be one of {', '.join(QUANTIZATION_TYPES)}")
            check(self.quantization_compute_dtype in COMPUTE_DTYPES, "quantization_compute_dtype",
                  f"must be one of {', '.join(COMPUTE_DTYPES)}")
        if self.finetuning_type == "freeze":
            check(self.freeze_trainable_layers != 0, "freeze_trainable_layers",
                  "must be a number of layers: N trains the last N, -N the first N")
        if self.finetuning_type == "ptuning_v2":
            check(self.pre_seq_len >= 1, "pre_seq_len", "must be at least 1")
        if self.finetuning_type == "distill":
            check(0 <= self.distill_alpha <= 1, "distill_alpha", "must be in [0, 1]")
            check(self.distill_temperature > 0, "distill_temperature", "must be greater than 0")
            check(self.distill_mode in DISTILL_MODES, "distill_mode", f"must be one of {', '.join(DISTILL_MODES)}")
        from core.data.template import TEMPLATES  # late import: data depends on nothing in config

        check(self.template == "auto" or self.template in TEMPLATES, "template",
              f"must be auto or one of {', '.join(TEMPLATES)}")
        from core.data.formats import FORMATS, parse_columns
        from core.data.readers import DataError

        check(self.dataset_format == "auto" or self.dataset_format in FORMATS, "dataset_format",
              f"must be 'auto' or one of {', '.join(FORMATS)}")
        try:
            parse_columns(self.columns)
        except DataError as exc:
            found.append(f"columns: {exc}")
        return found

    def validate(self) -> "RunConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


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
    if isinstance(default, dict):
        if not isinstance(raw, dict):
            raise TypeError(raw)
        return dict(raw)
    return raw


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['key=value', ...] from `--set` into a dict (values parsed as YAML scalars)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError([f"--set {pair}: expected key=value"])
        key, value = pair.split("=", 1)
        result[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return result


# LLaMA-Factory SFT keys that have no meaning here: accepted, and reported by name.
LLAMAFACTORY_IGNORED = ("do_train", "overwrite_cache", "preprocessing_num_workers", "plot_loss",
                        "overwrite_output_dir", "report_to", "ddp_timeout", "dataloader_num_workers", "dataset_dir",
                        "per_device_eval_batch_size", "eval_strategy", "save_only_model", "flash_attn",
                        "resume_from_checkpoint", "tokenized_path", "packing_side", "do_eval")


def from_llamafactory(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Translate a `llamafactory-cli train` SFT config into ours; returns (our keys, notes on what was ignored)."""
    data = dict(data)
    notes: list[str] = []
    stage = data.pop("stage", "sft")
    if stage != "sft":
        raise ConfigError([f"stage: only supervised fine-tuning (sft) is available here (got {stage!r})"])
    ignored = [key for key in LLAMAFACTORY_IGNORED if key in data]
    for key in ignored:
        data.pop(key)
    if ignored:
        notes.append(f"ignored LLaMA-Factory keys with no meaning here: {', '.join(ignored)}")
    if data.pop("bf16", False):
        data["precision"] = "bf16"
    if data.pop("fp16", False):
        data["precision"] = "fp16"
    if data.get("finetuning_type", "lora") == "lora" and data.get("quantization_bit"):
        data["finetuning_type"] = "qlora"
    if isinstance(data.get("dataset"), str) and "," in data["dataset"]:
        raise ConfigError([f"dataset: one dataset per run here (got {data['dataset']!r}); merge the files first"])
    if data.get("template") in ("glm4", "glm4_moe", "chatglm3", "chatglm2", None):
        data["template"] = {"glm4_moe": "glm4", None: "auto"}.get(data.get("template"), data.get("template"))
    if "lora_target" in data and isinstance(data["lora_target"], str):
        data["lora_target"] = data["lora_target"].replace(" ", "")
    return data, notes


def is_llamafactory_config(data: dict[str, Any]) -> bool:
    return "stage" in data or "do_train" in data


def load_yaml_with_notes(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, list[str]]:
    """Read a config (ours, or LLaMA-Factory's SFT YAML); returns it with notes about translated/ignored keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of key: value, got {type(data).__name__}"])
    notes: list[str] = []
    if is_llamafactory_config(data):
        data, notes = from_llamafactory(data)
    data.update(overrides or {})
    return RunConfig.from_dict(data), notes


def load_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    return load_yaml_with_notes(path, overrides)[0]


# Keys that only mean something for some methods; the others' values are left out of the command preview.
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "lora": ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_dora", "use_rslora"),
    "qlora": ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_dora", "use_rslora", "quantization_bit",
              "quantization_type", "double_quantization", "quantization_compute_dtype"),
    "freeze": ("freeze_trainable_layers", "freeze_extra_modules"),
    "ptuning_v2": ("pre_seq_len", "prefix_projection"),
    "distill": ("teacher_adapter", "student_model", "distill_alpha", "distill_temperature", "distill_mode"),
    "full": (),
}


def command_line(config: RunConfig) -> str:
    """The CLI line that starts this run: every key that differs from the defaults as --set."""
    defaults = RunConfig().to_dict()
    foreign = {key for keys in METHOD_KEYS.values() for key in keys} - set(METHOD_KEYS.get(config.finetuning_type, ()))
    changed = [(key, value) for key, value in config.to_dict().items()
               if defaults.get(key) != value and key not in foreign]
    parts = ["glm-workbench train"] + [f"--set {key}={_shell_value(value)}" for key, value in changed]
    return " \\\n    ".join(parts)


def _shell_value(value: Any) -> str:
    import shlex

    text = str(value).lower() if isinstance(value, bool) else str(value)
    return shlex.quote(text)


def save_yaml(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")

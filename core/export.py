"""Package a finished run for download: a zip whose root is a loadable PEFT adapter (or model) folder."""

from __future__ import annotations

import zipfile
from pathlib import Path

from core.runs import ADAPTER_DIR, CONFIG_FILE, METRICS_FILE, MODEL_DIR


class ExportError(ValueError):
    """A run that cannot be exported, phrased for the user."""


def run_output_dir(run_dir: str | Path) -> Path:
    """The run's adapter/ (LoRA) or model/ (full) folder."""
    run_dir = Path(run_dir)
    for name, marker in ((ADAPTER_DIR, "adapter_config.json"), (MODEL_DIR, "config.json")):
        if (run_dir / name / marker).is_file():
            return run_dir / name
    raise ExportError(f"{run_dir.name}: no adapter or model saved yet (has the run finished?)")


def zip_run(run_dir: str | Path, zip_path: str | Path) -> Path:
    """Zip the adapter/model files at the archive root, plus the run's config.yaml and metrics.jsonl.

    Unzipped, the folder loads with `PeftModel.from_pretrained` (or `from_pretrained` for a full model).
    Written under a temporary name first so a half-written zip is never served.
    """
    run_dir, zip_path = Path(run_dir), Path(zip_path)
    output = run_output_dir(run_dir)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partial = zip_path.with_name(f".{zip_path.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(output.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(output).as_posix())
        for extra in (CONFIG_FILE, METRICS_FILE):
            if (run_dir / extra).is_file():
                archive.write(run_dir / extra, extra)
    partial.replace(zip_path)
    return zip_path


MERGE_DTYPES = ("auto", "fp32", "bf16", "fp16")


def merge_run(run_dir: str | Path, target: str | Path, dtype: str = "auto", max_shard_size: str = "2GB") -> Path:
    """Merge a LoRA/QLoRA run's adapter into its full-precision base and save a standalone model folder.

    The base is loaded unquantized even for QLoRA (an adapter trained on a 4-bit base applies to the
    full-precision weights). Written to a temporary folder first, then renamed into place.
    """
    import json

    from peft import PeftModel

    from core.config import load_yaml
    from core.models.loader import load_model, load_tokenizer, pick_device, pick_dtype, resolve_model_path
    from core.runs import atomic_dir

    run_dir, target = Path(run_dir), Path(target)
    output = run_output_dir(run_dir)
    if output.name != ADAPTER_DIR:
        raise ExportError(f"{run_dir.name}: a full or freeze run already is a complete model: {output}")
    adapter_type = json.loads((output / "adapter_config.json").read_text()).get("peft_type")
    if adapter_type != "LORA":
        raise ExportError(f"{run_dir.name}: only LoRA/QLoRA adapters merge into the weights; "
                          f"this is a {adapter_type} adapter (use its zip instead)")
    if dtype not in MERGE_DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(MERGE_DTYPES)}")
    config = load_yaml(run_dir / CONFIG_FILE)
    base_path = resolve_model_path(config.model_name_or_path)
    device = pick_device()
    model = load_model(base_path, dtype=pick_dtype(dtype, device) if dtype != "auto" else pick_dtype("auto", device))
    merged = PeftModel.from_pretrained(model, str(output)).merge_and_unload()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as folder:
        merged.save_pretrained(folder, max_shard_size=max_shard_size)
        load_tokenizer(base_path).save_pretrained(folder)
    return target

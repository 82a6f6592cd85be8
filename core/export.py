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

"""The run folder on disk: the single source of truth that the UI, the CLI and the tests read.

    RUN/config.yaml     the exact config          RUN/status.json  state, progress, error
    RUN/metrics.jsonl   one JSON object per log   RUN/log.txt      human-readable log
    RUN/adapter/ (PEFT) or RUN/model/ (full)      RUN/checkpoints/ trainer checkpoints
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

STATUS_FILE = "status.json"
STOP_FILE = "STOP"  # an abort request that every process of a multi-process run can see
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
ACTIVE_STATES = ("queued", "running")


def is_main_process() -> bool:
    """In a multi-process (torchrun) run only rank 0 writes the run folder; alone, we are rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def runs_dir(workspace: str | Path) -> Path:
    return Path(workspace) / "runs"


def new_run_dir(workspace: str | Path, method: str, dataset: str) -> Path:
    """A fresh, readable, unique folder name: 20261127-101500-lora-identity."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset).stem)[:40] or "data"
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{stem}"
    root = runs_dir(workspace)
    root.mkdir(parents=True, exist_ok=True)
    candidate, counter = root / base, 1
    while candidate.exists():
        counter += 1
        candidate = root / f"{base}-{counter}"
    candidate.mkdir()
    return candidate


def write_text_atomic(path: Path, text: str) -> None:
    """Write under a temporary name, then rename: readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))


def write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Write a folder under a temporary name and rename it into place only when complete."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_status(run_dir: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def update_status(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    status = read_status(run_dir)
    if not is_main_process():
        return {**status, **fields}
    status.update(fields, updated=time.time())
    write_json_atomic(Path(run_dir) / STATUS_FILE, status)
    return status


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    if not is_main_process():
        return
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_metrics(run_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace metrics.jsonl (atomically), e.g. to drop steps a resumed run will log again."""
    if not is_main_process():
        return
    write_jsonl_atomic(Path(run_dir) / METRICS_FILE, records)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return records


def read_log_tail(run_dir: str | Path, lines: int = 30) -> str:
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@dataclass
class RunInfo:
    path: Path
    status: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")

    @property
    def adapter_dir(self) -> Path | None:
        folder = self.path / ADAPTER_DIR
        return folder if (folder / "adapter_config.json").is_file() else None

    @property
    def model_dir(self) -> Path | None:
        folder = self.path / MODEL_DIR
        return folder if (folder / "config.json").is_file() else None


def list_runs(workspace: str | Path) -> list[RunInfo]:
    """Every run folder, newest first."""
    root = runs_dir(workspace)
    if not root.is_dir():
        return []
    runs = [RunInfo(path, read_status(path)) for path in root.iterdir()
            if path.is_dir() and not path.name.startswith(".") and (path / STATUS_FILE).is_file()]
    return sorted(runs, key=lambda run: run.status.get("created", 0), reverse=True)


def find_run(workspace: str | Path, name: str) -> RunInfo | None:
    for run in list_runs(workspace):
        if run.name == name:
            return run
    return None

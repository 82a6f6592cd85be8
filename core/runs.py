"""The run folder on disk: the single source of truth that the UI, the CLI and the tests read.

    RUN/config.yaml     the exact config          RUN/status.json  state, progress, error
    RUN/metrics.jsonl   one JSON object per log   RUN/log.txt      human-readable log
    RUN/adapter/ (PEFT) or RUN/model/ (full)      RUN/checkpoints/ trainer checkpoints
    RUN/skipped_rows.txt  every row the data left out, and why
    RUN/.owner.lock     held by the process training it (core/ownership.py)

Reading never writes. A run whose status says queued or running but that no live process owns is shown as
`interrupted` (its owner was killed, or its machine restarted); Resume continues it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ModelError
from core.files import rewrite_in_place, write_json_atomic
from core.i18n import Message, message
from core.ownership import LOCK_FILE, has_live_owner

STATUS_FILE = "status.json"
STOP_FILE = "STOP"  # an abort request that every process of a multi-process run can see
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"
SKIPPED_ROWS_FILE = "skipped_rows.txt"
HELD_OUT_FILE = "held_out.jsonl"  # the rows val_size kept out of training: Evaluate and the Arena score them
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"  # what makes a folder a PEFT adapter
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
ACTIVE_STATES = ("queued", "running")
END_STATES = ("finished", "failed", "aborted", "interrupted")
RESUMABLE_STATES = ("aborted", "failed", "interrupted")


def is_main_process() -> bool:
    """In a multi-process (torchrun) run only rank 0 writes the run folder; alone, we are rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def runs_dir(workspace: str | Path) -> Path:
    return Path(workspace) / "runs"


def new_run_dir(workspace: str | Path, method: str, dataset: str) -> Path:
    """A fresh, readable, unique folder, created here: 20261127-101500-lora-identity (then -2, -3, ...)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset).stem)[:40] or "data"
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{stem}"
    root = runs_dir(workspace)
    root.mkdir(parents=True, exist_ok=True)
    for counter in range(1, 10_000):
        candidate = root / (base if counter == 1 else f"{base}-{counter}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue  # another run (or another process) took this name first
    raise FileExistsError(root / base)


def read_status(run_dir: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def update_status(run_dir: str | Path, last_resort: bool = False, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json (atomically). With `last_resort` (a run's final state on a full disk) the
    file is rewritten in place when no temporary copy fits."""
    status = read_status(run_dir)
    if not is_main_process():
        return {**status, **fields}
    status.update(fields, updated=time.time())
    path = Path(run_dir) / STATUS_FILE
    try:
        write_json_atomic(path, status)
    except OSError:
        if not last_resort:
            raise
        rewrite_in_place(path, json.dumps(status, ensure_ascii=False))
    return status


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    if not is_main_process():
        return
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def keep_metrics_until(run_dir: str | Path, step: int) -> None:
    """On resume from checkpoint `step`: drop the records of later steps (they will be logged again) and note
    the resume, so the steps of metrics.jsonl never go backwards without a recorded resume."""
    if not is_main_process():
        return
    from core.files import write_text_atomic

    kept = [m for m in read_metrics(run_dir) if m.get("step", 0) <= step]
    kept.append({"step": step, "event": "resume", "time": time.time()})
    write_text_atomic(Path(run_dir) / METRICS_FILE, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in kept))


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


LOG_LINE_CHARS = 2_000  # the most of one log line the page shows (a row's text in an error can be 1M characters)


def read_log_tail(run_dir: str | Path, lines: int = 30) -> str:
    """The log's last `lines` lines, each cut at LOG_LINE_CHARS (log.txt keeps them whole)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return ""
    tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(line if len(line) <= LOG_LINE_CHARS else line[:LOG_LINE_CHARS] + " …" for line in tail)


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (checkpoints are renamed into place only when complete)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def effective_state(run_dir: str | Path, status: dict[str, Any]) -> str:
    """The state to show: a queued or running run that no live process owns was interrupted."""
    state = status.get("state", "unknown")
    if state in ACTIVE_STATES and not has_live_owner(run_dir):
        return "interrupted"
    return state


def adapter_folder(path: str | Path) -> Path | None:
    """A PEFT adapter folder given itself or a run folder holding adapter/; None if it is neither."""
    folder = Path(path).expanduser()
    for candidate in (folder / ADAPTER_DIR, folder):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    return None


def adapter_problem(path: str | Path) -> Message | None:
    """Why `path` cannot be used as an adapter (naming it and what was expected), or None if it can: an adapter
    folder (adapter_config.json in it) or a run folder holding adapter/. Reads only."""
    if adapter_folder(path) is not None:
        return None
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return message("model.adapter_not_found", folder=str(path))
    if (folder / MODEL_DIR / "config.json").is_file() or (folder / "config.json").is_file():
        return message("model.adapter_is_model", folder=str(path))
    return message("model.not_an_adapter", folder=str(path))


def resolve_adapter(path: str | Path) -> Path:
    """The adapter folder `path` names (itself, or a run folder's adapter/); anything else raises ModelError."""
    problem = adapter_problem(path)
    if problem is not None:
        raise ModelError(problem)
    return adapter_folder(path)  # type: ignore[return-value]


@dataclass
class RunInfo:
    path: Path
    status: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def state(self) -> str:
        return effective_state(self.path, self.status)

    @property
    def adapter_dir(self) -> Path | None:
        folder = self.path / ADAPTER_DIR
        return folder if (folder / ADAPTER_CONFIG).is_file() else None

    @property
    def model_dir(self) -> Path | None:
        folder = self.path / MODEL_DIR
        return folder if (folder / "config.json").is_file() else None


def is_run_folder(path: Path) -> bool:
    return (path / STATUS_FILE).is_file() or (path / CONFIG_FILE).is_file()


def list_runs(workspace: str | Path) -> list[RunInfo]:
    """Every run folder, newest first."""
    root = runs_dir(workspace)
    if not root.is_dir():
        return []
    runs = [
        RunInfo(path, read_status(path))
        for path in root.iterdir()
        if path.is_dir() and not path.name.startswith(".") and (path / STATUS_FILE).is_file()
    ]
    return sorted(runs, key=lambda run: run.status.get("created", 0), reverse=True)


def find_run(workspace: str | Path, name: str) -> RunInfo | None:
    """The run called `name` in this workspace; a name is never used as a path (no '..', no '/')."""
    if not name or name != Path(name).name or name.startswith("."):
        return None
    path = runs_dir(workspace) / name
    if not (path / STATUS_FILE).is_file():
        return None
    return RunInfo(path, read_status(path))


def reclaim_run(run_dir: str | Path, owned: bool = False) -> list[tuple[str, int]]:
    """Remove what writes cut short by a kill left in a run folder: a model or adapter save's staging copy
    (`.model.partial-*`: a whole model), a replaced output's `.old-*`, a checkpoint's `checkpoints/.partial-*`,
    atomic writes' `.*.tmp`. Only while no process owns the run (`owned`: the caller does), since the owner may
    be writing them right now. Each removal is said in the run's log.txt."""
    import fcntl
    import logging

    from core.files import describe_reclaimed, reclaim_staging

    run_dir = Path(run_dir)
    handle = None
    if not owned:
        try:
            handle = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no lock file (not a run of ours), or someone trains it: theirs to write
            if handle is not None:
                os.close(handle)
            return []
    try:
        removed = reclaim_staging(run_dir) + reclaim_staging(run_dir / CHECKPOINTS_DIR)
    finally:
        if handle is not None:
            os.close(handle)
    if removed:
        line = f"reclaimed staging leftovers of writes cut short: {describe_reclaimed(removed)}"
        logging.getLogger("glm_workbench").warning("run %s: %s", run_dir.name, line)
        if is_main_process() and not any(
            isinstance(h, logging.FileHandler) and h.baseFilename == os.path.abspath(run_dir / LOG_FILE)
            for h in logging.getLogger("glm_workbench").handlers
        ):
            try:
                with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log:
                    log.write(f"{time.strftime('%H:%M:%S')} WARNING {line}\n")
            except OSError:
                pass  # a full disk: the removal itself freed room, the line is only a note
    return removed

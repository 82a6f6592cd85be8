"""A run's life on disk, as the UI, the CLI and the workers all go through it.

- `create_run`: a fresh folder (or the user's `output_dir`, only if it is new or empty: a folder holding a
  run or anything else is refused with what to do instead), owned by this process (core/ownership.py),
  holding the exact config and a `queued` status before any heavy work, so the run is visible at once.
- `claim_for_resume`: the same ownership taken over from a run that ended (aborted, failed, interrupted);
  refused while another process trains it, and for a finished run (continue it as a new run instead).
If the disk is full before a run has started, what this call created is removed and the caller gets a plain
message: nothing was trained, so nothing is lost.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig, load_yaml, save_yaml
from core.data.pairs import check_preference_rows
from core.errors import ConfigError, ConfigProblem, RunStateError
from core.files import is_disk_full
from core.methods import METHODS
from core.models.loader import check_model_reference, locate_model
from core.ownership import RunLock
from core.runs import (
    ACTIVE_STATES,
    CONFIG_FILE,
    RESUMABLE_STATES,
    STATUS_FILE,
    adapter_problem,
    is_run_folder,
    new_run_dir,
    read_status,
    update_status,
)
from core.stages import get_stage, is_preference
from core.training.preflight import check_model_fits_config, check_settings


@dataclass
class ClaimedRun:
    """A run folder this process owns, with the config it trains."""

    run_dir: Path
    config: RunConfig
    lock: RunLock
    resume: bool = False


def check_inputs(config: RunConfig) -> None:
    """Refuse, before any run folder exists, what cannot be used: wrong settings, a model that is not there, a
    dataset that cannot be read (its file, its format, its rows; for a preference stage, no pair in it)."""
    from core.training.speed import check_speed_settings

    config.validate()
    check_settings(config)
    check_adapters(config)
    check_speed_settings(config)
    check_model_reference(config.model_name_or_path)
    check_model_fits_config(locate_model(config.model_name_or_path), config)
    for dataset in filter(None, (config.dataset, config.eval_dataset)):
        if is_preference(config.stage):  # a preference stage needs pairs (or, for KTO, kto_tag rows) in the file
            check_preference_rows(dataset, get_stage(config.stage), config.dataset_format, config.columns)
        else:
            from core.data.prepare import check

            check(dataset, config.dataset_format, config.columns)  # cached: the run reads it from there


def check_adapters(config: RunConfig) -> None:
    """Refuse an adapter setting that names no adapter (a run folder counts: its adapter/ is used), naming the
    setting, the path and what was expected; reads only."""
    method = METHODS.get(config.finetuning_type)
    keys = ["adapter_name_or_path", *(method.adapter_keys if method is not None else ())]
    problems = []
    for key in keys:
        value = str(getattr(config, key, "") or "").strip()
        problem = adapter_problem(value) if value else None
        if problem is not None:
            problems.append(ConfigProblem(key, problem, value, show_value=False))
    if problems:
        raise ConfigError(problems)


def create_run(workspace: str | Path, config: RunConfig) -> ClaimedRun:
    config.validate()
    check_adapters(config)
    run_dir, created = _fresh_folder(workspace, config)
    lock = RunLock(run_dir)
    try:
        lock.acquire()
        save_yaml(config, run_dir / CONFIG_FILE)
        _mark_queued(run_dir, config)
    except BaseException as exc:
        lock.release()
        _remove_what_we_wrote(run_dir, created)
        if isinstance(exc, OSError) and is_disk_full(exc, run_dir):
            raise RunStateError("run.disk_full_at_start", folder=str(run_dir), detail=str(exc)) from None
        raise
    return ClaimedRun(run_dir, config, lock)


def _mark_queued(run_dir: Path, config: RunConfig) -> None:
    """The first status of a run that is owned and not yet started: what the runs table shows of it."""
    update_status(
        run_dir,
        state="queued",
        created=time.time(),
        method=config.finetuning_type,
        stage=config.stage,
        model=config.model_name_or_path,
        dataset=config.dataset,
        step=0,
        max_steps=0,
    )


def _fresh_folder(workspace: str | Path, config: RunConfig) -> tuple[Path, bool]:
    """(folder, whether this call created it). A named output_dir must be new or empty."""
    if not config.output_dir:
        return new_run_dir(workspace, config.finetuning_type, config.dataset), True
    target = Path(config.output_dir).expanduser()
    if target.exists():
        if not target.is_dir():
            raise RunStateError("files.target_is_file", folder=str(target))
        if is_run_folder(target):
            raise RunStateError("run.output_dir_holds_run", folder=str(target))
        if any(target.iterdir()):
            raise RunStateError("run.output_dir_not_empty", folder=str(target))
        return target, False
    target.mkdir(parents=True)
    return target, True


def _remove_what_we_wrote(run_dir: Path, created: bool) -> None:
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in (CONFIG_FILE, STATUS_FILE):  # the folder was the user's (empty): leave it as it was
        (run_dir / name).unlink(missing_ok=True)


def claim_prepared(run_dir: str | Path) -> ClaimedRun:
    """A folder prepared by hand for workers started by hand (config.yaml only, never started): owned and
    marked queued, like a fresh run."""
    run_dir = Path(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        if read_status(run_dir):
            raise RunStateError("run.output_dir_holds_run", folder=str(run_dir))
        config = load_yaml(run_dir / CONFIG_FILE).validate()
        _mark_queued(run_dir, config)
    except BaseException:
        lock.release()
        raise
    return ClaimedRun(run_dir, config, lock)


def claim_for_resume(run_dir: str | Path) -> ClaimedRun:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunStateError("run.not_a_run", folder=str(run_dir))
    lock = RunLock(run_dir).acquire(announce=False)  # refused (naming the owner) while another process trains it
    try:
        state = read_status(run_dir).get("state", "unknown")
        if state in ACTIVE_STATES:
            state = "interrupted"  # we hold the lock, so whoever was training it is gone
        if state == "finished":
            raise RunStateError("run.already_finished", run=run_dir.name)
        if state not in RESUMABLE_STATES:
            raise RunStateError("run.not_resumable", run=run_dir.name, state=state)
        config = load_yaml(run_dir / CONFIG_FILE).validate()
        from core.training.preflight import check_settings

        check_settings(config)  # settings that cannot run would fail the same way again: refused, saying which
        lock.announce()
        # Until the session has loaded data and model, the page must not read the old end state.
        update_status(run_dir, state="queued", error=None, error_message=None)
    except BaseException:
        lock.release()
        raise
    return ClaimedRun(run_dir, config, lock, resume=True)

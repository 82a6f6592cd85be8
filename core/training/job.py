"""Training in a background thread, one job at a time per process.

The thread only runs a `TrainingSession` (or the torchrun launcher); all state a page needs lives in the run folder, so closing or
refreshing the browser changes nothing, and a second Start gets a clear 'busy' answer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.config import RunConfig
from core.runs import new_run_dir, update_status
from core.training.distributed import run_distributed
from core.training.runner import TrainingSession, prepare_run_folder


class BusyError(RuntimeError):
    """A training job is already running in this process (`run` names it, for a translated message)."""

    def __init__(self, run: str):
        super().__init__(f"busy: run {run} is training; abort it or wait")
        self.run = run


class TrainingJob:
    def __init__(self, config: RunConfig, run_dir: Path, resume: bool = False):
        self.config = config
        self.run_dir = run_dir
        self.resume = resume
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"train-{run_dir.name}", daemon=True)
        self.result: dict | None = None

    def _run(self) -> None:
        if self.config.nproc_per_node > 1:
            self.result = run_distributed(self.run_dir, self.config.nproc_per_node, self.resume, self.stop_event)
        else:
            self.result = TrainingSession(self.config, self.run_dir, self.stop_event, resume=self.resume).run()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


class JobManager:
    """Starts, aborts and reports the process's single training job."""

    def __init__(self, workspace: str | Path):
        self.workspace = Path(workspace)
        self._lock = threading.Lock()
        self.current: TrainingJob | None = None

    def start(self, config: RunConfig, resume_dir: Path | None = None) -> Path:
        """Start a new run, or resume the run in `resume_dir` from its last checkpoint."""
        config.validate()
        with self._lock:
            if self.current is not None and self.current.alive:
                raise BusyError(self.current.run_dir.name)
            if resume_dir is not None:
                run_dir = resume_dir
                # Until the thread has loaded data and model, the page must not read the old end state.
                update_status(run_dir, state="queued", error=None)
            else:
                run_dir = Path(config.output_dir) if config.output_dir else new_run_dir(
                    self.workspace, config.finetuning_type, config.dataset)
                prepare_run_folder(config, run_dir)
            self.current = TrainingJob(config, run_dir, resume=resume_dir is not None)
            self.current.thread.start()
            return run_dir

    def abort(self) -> bool:
        """Ask the running job to stop at the next step; False if nothing is running."""
        job = self.current
        if job is None or not job.alive:
            return False
        job.stop_event.set()
        return True

    @property
    def running_run(self) -> Path | None:
        job = self.current
        return job.run_dir if job is not None and job.alive else None

    def wait(self, timeout: float | None = None) -> None:
        if self.current is not None:
            self.current.thread.join(timeout)

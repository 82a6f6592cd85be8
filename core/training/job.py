"""Training in a background thread, one job at a time per process.

The thread only runs a `TrainingSession` (or the torchrun launcher); all state a page needs lives in the run
folder, so closing or refreshing the browser changes nothing, and a second Start gets a clear 'busy' answer.
The run folder is owned (core/ownership.py) from before the thread starts until it ends, so another process
(the CLI, a second UI) can neither start a second writer nor take it over.
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.config import RunConfig
from core.errors import BusyError
from core.training.distributed import run_distributed
from core.training.lifecycle import ClaimedRun, claim_for_resume, create_run
from core.training.runner import TrainingSession


class TrainingJob:
    def __init__(self, claimed: ClaimedRun):
        self.claimed = claimed
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"train-{claimed.run_dir.name}", daemon=True)
        self.result: dict | None = None

    @property
    def config(self) -> RunConfig:
        return self.claimed.config

    @property
    def run_dir(self) -> Path:
        return self.claimed.run_dir

    def _run(self) -> None:
        claimed = self.claimed
        try:
            if claimed.config.nproc_per_node > 1:
                self.result = run_distributed(
                    claimed.run_dir, claimed.config.nproc_per_node, claimed.lock, claimed.resume, self.stop_event
                )
            else:
                self.result = TrainingSession(
                    claimed.config, claimed.run_dir, self.stop_event, resume=claimed.resume, lock=claimed.lock
                ).run()
        finally:
            claimed.lock.release()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


class JobManager:
    """Starts, aborts and reports the process's single training job."""

    def __init__(self, workspace: str | Path):
        self.workspace = Path(workspace)
        self._lock = threading.Lock()
        self.current: TrainingJob | None = None

    def start(self, config: RunConfig) -> Path:
        """Start a new run in a fresh folder."""
        return self._launch(lambda: create_run(self.workspace, config))

    def resume(self, run_dir: Path) -> Path:
        """Continue an aborted, failed or interrupted run from its newest checkpoint, in the same folder."""
        return self._launch(lambda: claim_for_resume(run_dir))

    def _launch(self, claim) -> Path:
        with self._lock:
            if self.current is not None and self.current.alive:
                raise BusyError(self.current.run_dir.name)
            self.current = TrainingJob(claim())
            self.current.thread.start()
            return self.current.run_dir

    def abort(self) -> bool:
        """Ask the running job to stop at the next step; False if nothing is running."""
        job = self.current
        if job is None or not job.alive:
            return False
        job.stop_event.set()
        return True

    @property
    def running(self) -> TrainingJob | None:
        job = self.current
        return job if job is not None and job.alive else None

    @property
    def running_run(self) -> Path | None:
        job = self.running
        return job.run_dir if job is not None else None

    def wait(self, timeout: float | None = None) -> None:
        if self.current is not None:
            self.current.thread.join(timeout)

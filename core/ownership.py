"""Exactly one process owns a run folder while it trains: a lock file that the operating system releases when
its process ends, however it ends (kill -9 included).

The owner holds an exclusive `flock` on RUN/.owner.lock for as long as it trains, and writes its pid, host and
start time into the file, so a refusal can say who holds it. Anyone can ask whether a run has a live owner by
trying a shared lock without waiting: it is refused while the owner lives, and granted once it is gone. That is
how a run whose status still says "running" is recognised as interrupted, within a second of being looked at,
and how a later start takes over the folder of a process that died.

A multi-process run (torchrun) is owned by the process that launched it; the workers it starts are told so
through GLM_WORKBENCH_RUN_OWNER and do not take the lock themselves. Workers started by hand (several machines)
have no such launcher: their rank 0 takes the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import RunStateError

LOCK_FILE = ".owner.lock"
OWNER_ENV = "GLM_WORKBENCH_RUN_OWNER"  # "pid:run_dir" of a launcher whose workers train the run
ACQUIRE_TRIES = 20  # a reader probing the lock holds it for an instant: retry briefly before refusing


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    since: float

    @classmethod
    def read(cls, run_dir: Path) -> Owner | None:
        try:
            data = json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8"))
            return cls(int(data["pid"]), str(data["host"]), float(data["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def has_live_owner(run_dir: str | Path) -> bool:
    """Whether some process holds the run's lock now (never blocks, never writes)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody ever owned it this way, or the folder is gone
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        os.close(handle)


def launched_by_owner(run_dir: str | Path) -> bool:
    """Whether this process is a worker of a launcher that owns `run_dir` (see OWNER_ENV)."""
    value = os.environ.get(OWNER_ENV, "")
    pid, _, folder = value.partition(":")
    if not pid.isdigit() or Path(folder).resolve() != Path(run_dir).resolve():
        return False
    owner = Owner.read(Path(run_dir))
    return owner is not None and owner.pid == int(pid) and has_live_owner(run_dir)


class RunLock:
    """The ownership of one run folder; `acquire()` raises RunStateError naming the owner if another has it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._handle: int | None = None

    def acquire(self, announce: bool = True) -> RunLock:
        """Take the run, or raise RunStateError naming its owner. With `announce`, write who owns it now (a
        caller that may still decline the run announces only once it keeps it)."""
        path = self.run_dir / LOCK_FILE
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(ACQUIRE_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 == ACQUIRE_TRIES:
                    os.close(handle)
                    owner = Owner.read(self.run_dir)
                    raise RunStateError(
                        "run.owned",
                        run=self.run_dir.name,
                        pid=owner.pid if owner else "?",
                        host=owner.host if owner else "?",
                    ) from None
                time.sleep(0.05)
        self._handle = handle
        if announce:
            self.announce()
        return self

    def announce(self) -> None:
        """Write this process's pid, host and time into the held lock file (what refusals quote)."""
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        try:
            os.ftruncate(self._handle, 0)
            os.pwrite(self._handle, record.encode(), 0)
        except OSError:
            pass  # a full disk: the lock itself still holds; only the owner's name is missing from refusals

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        """Give up the run. The file stays (an empty lock file means nothing); the lock goes with the fd."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def worker_environment(self) -> dict[str, str]:
        """What the workers of a multi-process run need to know that this process owns the run for them."""
        return {OWNER_ENV: f"{os.getpid()}:{self.run_dir.resolve()}"}

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

"""How the workbench writes to disk, so that it never loses or clobbers anything (docs/DESIGN.md, "What the
workbench promises about your files").

- A file is written under a temporary name beside it and renamed into place: readers never see half of it.
- A folder (a model, an adapter, a merge, a conversion) is written into a fresh staging folder beside its
  target, with a unique name, and renamed into place when complete. A target that exists and is not empty is
  never deleted: the caller is refused with a message, unless the folder carries our own marker saying it is
  a finished output of ours of the same kind (`replace_ours`).
- A full disk is recognised however the library phrases it, and what was half-written is removed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import RunStateError
from core.i18n import message

OUTPUT_MARKER = ".glm_workbench_output.json"  # in folders we wrote: what they are (merge, conversion, ...)
STAGING_TAG = "glmwb"  # in the random part of every staging name we make: reclaim removes only names carrying it
LOW_DISK_BYTES = 1 << 20  # below this much free space, a failed write is taken to be a full disk


def write_text_atomic(path: Path, text: str) -> None:
    """Write under a unique temporary name, then rename: readers never see a half-written file. A write that
    fails (a full disk) leaves no temporary file behind."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{STAGING_TAG}", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))


def rewrite_in_place(path: Path, text: str) -> None:
    """Last resort when the disk is full: overwrite a small file's own blocks (truncating first frees them),
    so a run's final status can still be written when no temporary copy fits."""
    with open(path, "r+" if path.exists() else "w", encoding="utf-8") as stream:
        stream.truncate(0)
        stream.write(text)


def is_disk_full(exc: BaseException, where: str | Path | None = None) -> bool:
    """Whether `exc` means the disk is full: ENOSPC, or the phrases libraries use for it (torch.save says
    'unexpected pos' or 'file write failed'), or any write error while the disk has no room left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    if any(
        phrase in text
        for phrase in (
            "no space left on device",
            "failed writing file",
            "file write failed",
            "disk quota exceeded",
            "unexpected pos",
        )
    ):
        return True
    if where is not None and isinstance(exc, (OSError, RuntimeError)):
        return free_bytes(where) < LOW_DISK_BYTES
    return False


def free_bytes(where: str | Path) -> int:
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


CONVERTED_KIND = "converted-model"  # the marker of a finished conversion: both converters write it (core/models/)


def output_kind(path: Path) -> str | None:
    """The kind recorded in a folder's marker (one we wrote and finished), or None."""
    try:
        return json.loads((Path(path) / OUTPUT_MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


class TargetNotFreeError(Exception):
    """The target exists and holds something we may not replace; `reason` is 'file' or 'not_empty'."""

    def __init__(self, target: Path, reason: str):
        super().__init__(f"{target}: {reason}")
        self.target, self.reason = target, reason


def refusal(exc: TargetNotFreeError):
    """The user's message for a target we may not write (a file, or a folder that is not empty and not ours),
    saying what to do instead; `--overwrite` is offered only where it could apply."""
    if exc.reason == "file":
        return RunStateError("files.target_is_file", folder=str(exc.target))
    return RunStateError("files.target_not_empty", folder=str(exc.target))


@contextmanager
def staged_dir(target: Path, kind: str | None = None, replace: str = "never") -> Iterator[Path]:
    """Yield a fresh staging folder beside `target`; when the block ends without error, rename it to `target`.

    `target` may be absent or an empty folder. Anything else is refused (TargetNotFreeError) unless `replace` allows
    it: "ours" replaces a finished folder of ours whose marker has the same `kind` (an earlier merge into the
    same folder, with --overwrite), "owned" replaces whatever is there (only for a folder inside a run this
    process owns: the run's own adapter on resume). The old folder is removed only after the new one is
    complete. On any error the staging folder is removed and `target` is untouched. With `kind`, the finished
    folder is marked as ours.
    """
    target = Path(target)
    check_target_free(target, kind, replace)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{STAGING_TAG}", dir=target.parent))
    with held(staging):  # a reclaim (in any process) leaves it alone while this process lives
        yield from _staged(staging, target, kind, replace)


def _staged(staging: Path, target: Path, kind: str | None, replace: str) -> Iterator[Path]:
    try:
        yield staging
        if kind is not None:
            (staging / OUTPUT_MARKER).write_text(json.dumps({"kind": kind}), encoding="utf-8")
        check_target_free(target, kind, replace)  # nothing of someone else's appeared there meanwhile
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{STAGING_TAG}", dir=target.parent))
            with held(retired):
                os.replace(target, retired / target.name)
                os.replace(staging, target)
                shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def check_target_free(target: Path, kind: str | None = None, replace: str = "never") -> None:
    """Raise TargetNotFreeError unless `target` may be written (see staged_dir)."""
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise TargetNotFreeError(target, "file")
    if is_empty_dir(target) or replace == "owned":
        return
    if replace == "ours" and kind is not None and output_kind(target) == kind:
        return
    raise TargetNotFreeError(target, "not_empty")


def damaged_file(folder: Path, required: tuple[str, ...] = ()) -> tuple[str, Any] | None:
    """(file name, a Message saying what is wrong) for the first file of `folder` (a checkpoint, an adapter, a
    model) that cannot be loaded, or None when every file is whole. Cheap: reads headers and small JSON files
    only, never the tensors, so it catches what a kill, a full disk or a copy cut short leaves (a truncated
    file, invalid JSON), not a flipped bit. Each name in `required` must be there."""
    folder = Path(folder)
    for name in required:
        if not (folder / name).is_file():
            return name, message("checkpoint.missing")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            problem = file_problem(path)
            if problem is not None:
                return str(path.relative_to(folder)), problem
    return None


def file_problem(path: Path):
    """What is wrong with one file the trainer or peft wrote (a Message), or None if it looks whole."""
    import struct
    import zipfile

    path = Path(path)
    size = path.stat().st_size
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if path.name == "trainer_state.json" and not (
                isinstance(data, dict) and isinstance(data.get("global_step"), int)
            ):
                return message("checkpoint.invalid_json")
        elif path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    return message("checkpoint.truncated", size=size, expected=8)
                (length,) = struct.unpack("<Q", head)
                if length > size - 8:
                    return message("checkpoint.truncated", size=size, expected=8 + length)
                header = json.loads(handle.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if size < 8 + length + end:
                return message("checkpoint.truncated", size=size, expected=8 + length + end)
        elif path.suffix in (".pt", ".pth", ".bin"):
            # torch.save writes a zip archive whose directory is at the end: a cut-short file has none.
            with zipfile.ZipFile(path) as archive:
                for item in archive.infolist():
                    if item.header_offset + item.compress_size > size:
                        return message("checkpoint.truncated", size=size, expected=item.header_offset)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error, zipfile.BadZipFile):
        return message("checkpoint.unreadable", kind=path.suffix.lstrip("."))
    except OSError as exc:
        return message("checkpoint.os_error", detail=str(exc))
    return None


# ---- staging leftovers ------------------------------------------------------------------------------------------
# What a write killed half-way leaves: staged_dir's `.NAME.partial-*` and `.NAME.old-*` folders, a zip's
# `.NAME.*.partial`, write_text_atomic's `.NAME.*.tmp`, a checkpoint's `.partial-*` (tempfile's random part is
# [a-z0-9_], and we start it with STAGING_TAG). Only names of this shape are ever reclaimed, so a user's file that
# merely looks like one (`.notes.old-2024`) is never touched, and only when no process is writing them: each writer
# holds an flock on its staging folder or file while it writes (`held`), which the OS drops when it dies.
STAGING_NAME = re.compile(
    rf"^\.(?:partial-{STAGING_TAG}[a-z0-9_]+|.+\.(?:partial-{STAGING_TAG}[a-z0-9_]+|old-{STAGING_TAG}[a-z0-9_]+"
    rf"|{STAGING_TAG}[a-z0-9_]+\.partial|{STAGING_TAG}[a-z0-9_]+\.tmp))$"
)
FRESH_SECONDS = 2.0  # younger entries are left alone: a writer may be between creating one and locking it


@contextmanager
def held(path: Path) -> Iterator[None]:
    """A shared flock on a staging folder or file for as long as it is being written."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_SH)
        yield
    finally:
        os.close(handle)


def _in_use(path: Path) -> bool:
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return True  # cannot tell: leave it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(handle)
    return False


def staging_leftovers(folder: Path, target: str | None = None) -> list[Path]:
    """The staging entries directly in `folder` that no live process is writing (all of them, or only those of
    the output named `target`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    now = time.time()
    for entry in sorted(folder.iterdir()):
        if not STAGING_NAME.match(entry.name) or entry.is_symlink():
            continue
        if target is not None and not entry.name.startswith(f".{target}."):
            continue
        try:
            if now - entry.stat().st_mtime < FRESH_SECONDS:
                continue
        except OSError:
            continue
        if not _in_use(entry):
            found.append(entry)
    return found


def reclaim_staging(folder: Path, target: str | None = None) -> list[tuple[str, int]]:
    """Remove the staging leftovers in `folder` (see staging_leftovers); returns (name, bytes) of each."""
    removed = []
    for entry in staging_leftovers(folder, target):
        size = _size(entry)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            removed.append((entry.name, size))
    return removed


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.stat().st_size
    except OSError:
        return 0


def describe_reclaimed(removed: list[tuple[str, int]]) -> str:
    total = sum(size for _, size in removed)
    return f"{', '.join(name for name, _ in removed)} ({total / 2**20:.1f} MiB)"

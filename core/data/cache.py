"""The data cache: what reading, checking and tokenizing a data file produced, kept so the next time is quick.

It lives under the workbench home (`$GLM_WORKBENCH_HOME/data-cache`, by default ~/.cache/glm-workbench), beside
the demo model, and not in a workspace: entries are keyed by the file's content, so one cached file serves every
workspace, run and copy of that file; they are derived data, rebuilt whenever missing, so nothing of value is
lost when the folder is deleted (it can grow to a few times the size of the files used: delete it to free room);
and a workspace stays what people back up or move.

An entry is a folder named after its key, written as the workbench writes folders (core/files.py): into a fresh
staging folder, renamed into place when complete, with our marker inside. Two processes wanting the same entry
build it once (a file lock per entry). An entry that is incomplete or damaged (a file missing, cut short, not
readable) is ignored and built again; a folder in its place that we did not write is never touched.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.files import OUTPUT_MARKER, STAGING_TAG, TargetNotFreeError, is_disk_full, output_kind, staged_dir
from core.resources import home_dir

CACHE_KIND = "data-cache"  # the marker's kind in every entry
LAYOUT_VERSION = 1  # part of every key, with a hash of the data code: what made an entry is what reads it
META_FILE = "meta.json"


def cache_root() -> Path:
    return home_dir() / "data-cache"


_digests: dict[tuple, str] = {}  # this process's hashes, by the file's identity and last change


def file_digest(path: str | Path) -> str:
    """The content hash of a file (xxh3-128, about a second per GB). Hashed again whenever the file may have
    changed: a write changes its size, modification or status-change time (the last cannot be set back)."""
    import xxhash

    info = os.stat(path)
    identity = (str(Path(path).resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    if identity in _digests:
        return _digests[identity]
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    if len(_digests) > 256:
        _digests.clear()
    _digests[identity] = digest.hexdigest()
    return _digests[identity]


@functools.cache
def code_version() -> str:
    """A hash of the data code (core/data/*.py) and of the versions of the libraries that read and tokenize: a
    change to a reader, a format's converter, a template or a tokenizer library makes new keys, so no entry made
    by other code is ever used."""
    from importlib.metadata import PackageNotFoundError, version

    import xxhash

    digest = xxhash.xxh3_64()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    for package in ("datasets", "pyarrow", "pandas", "tokenizers", "transformers", "sentencepiece"):
        found = getattr(sys.modules.get(package), "__version__", None)  # imported already: no metadata search
        if found is None:
            try:
                found = version(package)
            except PackageNotFoundError:
                found = "none"
        digest.update(f"{package}={found}".encode())
    return digest.hexdigest()


def make_key(*parts: Any) -> str:
    """A short stable key for JSON-able parts (and the layout and code they were made with)."""
    import xxhash

    identity = [LAYOUT_VERSION, code_version(), *parts]
    return xxhash.xxh3_128(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class Corrupt(Exception):  # noqa: N818 - not an error the user sees: the entry is built again
    """An entry's files cannot be used; raised by the opener so that the entry is rebuilt."""


def read_meta(folder: Path) -> dict[str, Any] | None:
    """An entry's meta.json when the entry is complete: our marker, the meta file, every file it lists with the
    size it had when written. None otherwise."""
    if output_kind(folder) != CACHE_KIND:
        return None
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        files = meta["files"]
        if any((folder / name).stat().st_size != size for name, size in files.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return meta


def is_cached(name: str) -> bool:
    """Whether the entry `name` is there and complete (its files are not opened)."""
    return read_meta(cache_root() / name) is not None


def entry(name: str, build: Callable[[Path], dict[str, Any]], open_entry: Callable[[Path, dict[str, Any]], Any]) -> Any:
    """`open_entry(folder, meta)` of the cache entry `name`, building it first with `build(staging)` when it is
    missing or damaged. `build` writes its files into the staging folder and returns the meta to keep (its
    "files" are filled in here); `open_entry` raises Corrupt when the files cannot be used."""
    target = cache_root() / name
    meta = read_meta(target)
    if meta is not None:
        try:
            return open_entry(target, meta)
        except Corrupt:
            pass
    with _locked(target):
        meta = read_meta(target)
        if meta is not None:
            try:
                return open_entry(target, meta)
            except Corrupt:
                pass
        _remove_leftovers(target)
        try:
            with staged_dir(target, kind=CACHE_KIND, replace="ours") as staging:
                meta = build(staging)
                files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER)
                meta["files"] = {str(p.relative_to(staging)): p.stat().st_size for p in files}
                (staging / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        except TargetNotFreeError:
            raise DataError("data.cache_blocked", folder=str(target)) from None
        except OSError as exc:
            if not _cannot_write(exc, target.parent):
                raise
            raise DataError("data.cache_write_failed", folder=str(target.parent), detail=str(exc)) from None
        return open_entry(target, read_meta(target) or meta)


def _cannot_write(exc: OSError, root: Path) -> bool:
    """Whether `exc` is the cache's own folder refusing a write (full, read-only, not ours to write), not a
    problem with the data file being read."""
    if is_disk_full(exc, root):
        return True
    name = getattr(exc, "filename", None)
    return isinstance(exc, PermissionError) and bool(name) and str(name).startswith(str(root))


@contextmanager
def _locked(target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_leftovers(target: Path) -> None:
    """Staging and retired folders of this entry left by a process that died while writing it. Only called under
    the entry's lock, so none of them is in use; the names are ours (core/files.py's staged_dir)."""
    for prefix in (f".{target.name}.partial-{STAGING_TAG}", f".{target.name}.old-{STAGING_TAG}"):
        for leftover in target.parent.glob(f"{prefix}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)

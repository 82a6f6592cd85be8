"""A dataset with its images, as one thing: a folder (its one data file beside the images) or a zip of it.

A zip is unpacked member by member into a fresh folder of the workbench's: no member may name a place outside it
(an absolute path, `..`), a link is refused, and the bytes written are counted against a budget, so a zip that
unpacks to more than it admits (a zip bomb) stops at the budget instead of filling the disk.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from core.data.readers import data_file_in
from core.errors import DataError

MAX_BUNDLE_BYTES = 16 * 2**30  # unpacked, all members together
MAX_MEMBERS = 200_000


def _member_path(name: str) -> PurePosixPath | None:
    """A member's path inside the target, or None for one that would land outside it."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        return None
    return path


def unpack(zip_path: Path, target: Path) -> Path:
    """Unpack a dataset zip into `target` (a new folder) and return its data file. Raises DataError naming the
    zip and what is wrong; `target` is then left for the caller to remove (it is the caller's staging folder)."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError("data.zip_unreadable", zip_path, detail=str(exc)) from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise DataError("data.zip_too_many", zip_path, count=len(members), limit=MAX_MEMBERS)
        budget = MAX_BUNDLE_BYTES
        for member in members:
            path = _member_path(member.filename)
            if path is None:
                raise DataError("data.zip_unsafe_member", zip_path, member=member.filename)
            if stat.S_ISLNK(member.external_attr >> 16):
                raise DataError("data.zip_link", zip_path, member=member.filename)
            if member.is_dir() or not path.parts:
                continue
            destination = target.joinpath(*path.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as source, open(destination, "wb") as sink:
                    while chunk := source.read(1 << 20):
                        budget -= len(chunk)
                        if budget < 0:
                            raise DataError("data.zip_too_large", zip_path, limit=MAX_BUNDLE_BYTES // 2**30)
                        sink.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DataError("data.zip_unreadable", zip_path, detail=str(exc)) from None
    try:
        return data_file_in(target)
    except DataError as exc:  # said of the zip, not of the folder it was unpacked into
        files = exc.detail.params.get("files")
        code = "data.zip_several_data" if files else "data.zip_without_data"
        raise DataError(code, zip_path, files=files or "") from None


def remove_staging(folder: Path) -> None:
    """Remove a staging folder this module's caller created (never anything else)."""
    shutil.rmtree(folder, ignore_errors=True)

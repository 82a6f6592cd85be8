"""Images named by data rows: where a reference points, and opening it safely.

A reference is a file path (relative to the data file's folder, or absolute; `file://` accepted) or a `data:`
URI with base64 content. `http(s)` references are refused, never fetched: training must not depend on the network
or reach addresses a shared workbench should not (only an API server started with --fetch-images fetches them,
fetch_image). Each failure is a RowError, so a bad image costs its row only.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.data.formats import REMOTE_SCHEMES, Conversation, RowError

MAX_FETCHED_BYTES = 20 * 2**20  # a web image an API server fetches (when switched on): larger is refused
FETCH_TIMEOUT_S = 10.0


def is_remote(reference: str) -> bool:
    return reference.strip().lower().startswith(REMOTE_SCHEMES)


def _path(reference: str, base_dir: Path | None) -> Path:
    text = reference.strip()
    if text.lower().startswith("file://"):
        text = text[len("file://") :]
    path = Path(text).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _data_uri_bytes(reference: str, number: int) -> bytes:
    header, comma, payload = reference.partition(",")
    if not comma or ";base64" not in header.lower():
        raise RowError("row.image_unreadable", number=number, image=header[:40], detail="not a base64 data: URI")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RowError("row.image_unreadable", number=number, image=header[:40], detail=str(exc)) from None


def fetch_image(url: str, number: int, max_bytes: int | None = None, timeout: float = FETCH_TIMEOUT_S) -> str:
    """A web image as a data: URI, for an API server switched to fetch them (`glm-workbench api --fetch-images`;
    training never fetches). One GET with a timeout and a byte cap, so a slow or endless answer costs a bounded
    wait and memory; the bytes are then checked as any image is (open_image)."""
    import urllib.error
    import urllib.request

    max_bytes = max_bytes or MAX_FETCHED_BYTES
    if not is_remote(url):
        raise RowError("row.image_fetch_failed", number=number, image=url, detail="only http(s) addresses are fetched")
    request = urllib.request.Request(url.strip(), headers={"User-Agent": "glm-workbench"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise RowError("row.image_fetch_failed", number=number, image=url, detail=f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RowError("row.image_fetch_failed", number=number, image=url, detail=str(reason)) from None
    if len(payload) > max_bytes:
        raise RowError("row.image_fetch_too_large", number=number, image=url, limit=max_bytes // 2**20)
    return "data:application/octet-stream;base64," + base64.b64encode(payload).decode("ascii")


def describe(reference: str) -> str:
    """A reference as a row problem names it: a data: URI by its header only."""
    return reference.partition(",")[0][:40] if reference.lower().startswith("data:") else reference


def open_image(reference: str, number: int, base_dir: Path | None = None):
    """Image `number` (from 1) of a row, decoded and in RGB. PIL's decompression-bomb limit is a refusal here,
    not a warning: a tiny file that decodes to gigapixels would take the machine's memory."""
    from PIL import Image, UnidentifiedImageError

    if is_remote(reference):
        raise RowError("row.image_remote", number=number, image=reference)
    if reference.strip().lower().startswith("data:"):
        source: Path | io.BytesIO = io.BytesIO(_data_uri_bytes(reference.strip(), number))
    else:
        source = _path(reference, base_dir)
        if not source.is_file():
            raise RowError("row.image_missing", number=number, image=str(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.load()
                return image.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise RowError(
            "row.image_too_large", number=number, image=describe(reference), limit=Image.MAX_IMAGE_PIXELS
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RowError("row.image_unreadable", number=number, image=describe(reference), detail=str(exc)) from None


def open_images(conversation: Conversation, base_dir: Path | None = None) -> list:
    """Every image of a row, in order (none for a text-only row)."""
    return [open_image(reference, number, base_dir) for number, reference in enumerate(conversation.images or (), 1)]


def image_check(base_dir: Path | None) -> Callable[[Conversation], None]:
    """What `formats.convert(..., inspect=)` runs on each row of a data file in `base_dir`: every image opened
    once, so a missing, unreadable or oversized one is its row's problem and the rest of the file loads."""

    def inspect(conversation: Conversation) -> None:
        for image in open_images(conversation, base_dir):
            image.close()

    return inspect


@dataclass(frozen=True)
class SampleImage:
    """One image of a sample as the Data tab shows it."""

    thumbnail: bytes  # PNG, at most THUMBNAIL pixels a side
    size: tuple[int, int]  # (width, height) as stored
    resized: tuple[int, int]  # (width, height) after the model's image processor resizes it
    tokens: int  # the `<|image|>` tokens it costs (0: a text model)


THUMBNAIL = 96


def thumbnail_png(image) -> bytes:
    """A small PNG of `image` for the page: a large photo is never sent to the browser whole."""
    small = image.copy()
    small.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail_uri(reference: str) -> str | None:
    """A `data:` URI of the image's thumbnail for a page (None when it cannot be read any more: a moved file)."""
    try:
        image = open_image(reference, 1)
    except RowError:
        return None
    return "data:image/png;base64," + base64.b64encode(thumbnail_png(image)).decode()

"""Read a data file (json, jsonl, csv, parquet) into a list of row dicts, with errors that name file and row."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.resources import asset_file

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet")
# name -> file in the package data's datasets/ (core/assets/datasets, shown in the repository as assets/datasets)
DEMO_DATASETS = {
    "identity": "identity.json",
    "advertise_gen": "advertise_gen.jsonl",
    "multiturn": "multiturn.json",
    "identity_pairs": "identity_pairs.json",  # pairwise: the identity answers against wrong ones
    "tool_calls": "tool_calls.json",  # OpenAI messages with tools, tool calls and reasoning (for demo-moe)
    "colours": "colours.json",  # image rows: name a solid colour (for demo-vision / demo-vision-moe)
}


def resolve_dataset(name_or_path: str) -> Path:
    """A demo dataset's name ('identity') or a file path -> an existing file path."""
    if name_or_path in DEMO_DATASETS:
        return asset_file("datasets", DEMO_DATASETS[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.is_dir():  # a dataset with its images: the folder's one data file
        return data_file_in(path)
    if not path.is_file():
        raise DataError("data.not_found", path, demos=", ".join(DEMO_DATASETS))
    return path


def data_files_in(folder: Path) -> list[Path]:
    """The data files (json, jsonl, csv, parquet) directly in `folder`, by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)


def data_file_in(folder: Path) -> Path:
    """A folder named as a dataset: its one data file (the images beside it are read from there)."""
    found = data_files_in(folder)
    if len(found) == 1:
        return found[0]
    if not found:
        # one level down, as a zip of a folder unpacks: `bundle/data.jsonl`
        inner = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
        if len(inner) == 1 and len(data_files_in(inner[0])) == 1:
            return data_files_in(inner[0])[0]
        raise DataError("data.folder_without_data", full_path=str(folder.resolve()))
    raise DataError("data.folder_several_data", full_path=str(folder.resolve()), files=", ".join(p.name for p in found))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read every row of a data file; raise DataError for anything that is not a table of objects."""
    path = Path(path)
    suffix = check_file(path)
    raw = path.read_bytes()
    reader = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}[suffix]
    rows = reader(path, raw)
    if not rows:
        raise DataError("data.no_rows", path)
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError("data.row_not_object", path, index, got=type(row).__name__)
    return rows


def check_file(path: Path) -> str:
    """What can be told about a data file before reading its rows: a supported type, not empty (whitespace only
    counts as empty), no parquet under another name. Reads only as far as the first character that is not
    whitespace. Returns the file's suffix (lower case), which says how to read it."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(
            "data.unsupported_type", path, suffix=suffix or "(none)", supported=", ".join(SUPPORTED_EXTENSIONS)
        )
    with open(path, "rb") as handle:
        head = handle.read(4)
        block = head
        while block and not block.strip():
            block = handle.read(1 << 20)
    if not block.strip():
        raise DataError("data.file_empty", path)
    if head == b"PAR1" and suffix != ".parquet":
        raise DataError("data.parquet_misnamed", path, suffix=suffix)
    return suffix


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 (with or without BOM); GBK as used by Excel on Chinese Windows as a fallback."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DataError("data.not_utf8", path)


def _read_json(path: Path, raw: bytes) -> list[Any]:
    text = _decode(path, raw)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file with one object per line is common: accept it as JSONL.
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(path, raw)
        raise DataError("data.invalid_json", path, line=exc.lineno, column=exc.colno, detail=exc.msg) from None
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if lists:
            raise DataError("data.json_object_with_list", path, key=lists[0])
        raise DataError("data.json_not_list", path, got="object")
    if not isinstance(data, list):
        raise DataError("data.json_not_list", path, got=type(data).__name__)
    return data


def _read_jsonl(path: Path, raw: bytes) -> list[Any]:
    rows = []
    for number, line in enumerate(_decode(path, raw).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError("data.invalid_jsonl", path, line=number, detail=exc.msg) from None
    return rows


def _read_csv(path: Path, raw: bytes) -> list[dict[str, Any]]:
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(_decode(path, raw)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError("data.invalid_csv", path, detail=str(exc).strip()) from None
    return frame.to_dict(orient="records")


def _read_parquet(path: Path, raw: bytes) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types for a broken file
        raise DataError("data.invalid_parquet", path, detail=str(exc).strip()) from None
    return [plain_value(row) for row in frame.to_dict(orient="records")]


def plain_value(value: Any) -> Any:
    """numpy arrays / scalars from parquet -> plain lists / Python values (NaN -> None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {key: plain_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value

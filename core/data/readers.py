"""Read a data file (json, jsonl, csv, parquet) into a list of row dicts, with errors that name file and row."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet")
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "datasets"
DEMO_DATASETS = {
    "identity": ASSETS_DIR / "identity.json",
    "advertise_gen": ASSETS_DIR / "advertise_gen.jsonl",
    "multiturn": ASSETS_DIR / "multiturn.json",
}


class DataError(ValueError):
    """A problem with a data file, phrased for the user: which file, which row, what is wrong."""

    def __init__(self, message: str, path: str | Path | None = None, row: int | None = None):
        self.path = str(path) if path is not None else None
        self.row = row
        where = Path(self.path).name if self.path else ""
        if row is not None:
            where = f"{where} row {row}" if where else f"row {row}"
        super().__init__(f"{where}: {message}" if where else message)


def resolve_dataset(name_or_path: str) -> Path:
    """A demo dataset's name ('identity') or a file path -> an existing file path."""
    if name_or_path in DEMO_DATASETS:
        return DEMO_DATASETS[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        demos = ", ".join(DEMO_DATASETS)
        raise DataError(f"dataset not found (not a file, and not a demo dataset: {demos})", path)
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read every row of a data file; raise DataError for anything that is not a table of objects."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(f"unsupported file type '{suffix or '(none)'}'; use {', '.join(SUPPORTED_EXTENSIONS)}", path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError("the file is empty", path)
    if raw[:4] == b"PAR1" and suffix != ".parquet":
        raise DataError(f"this is a parquet file named '{suffix}': rename it to .parquet", path)
    reader = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}[suffix]
    rows = reader(path, raw)
    if not rows:
        raise DataError("the file holds no rows", path)
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"expected an object with named fields, got {type(row).__name__}", path, index)
    return rows


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 (with or without BOM); GBK as used by Excel on Chinese Windows as a fallback."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DataError("cannot decode the text: save it as UTF-8", path)


def _read_json(path: Path, raw: bytes) -> list[Any]:
    text = _decode(path, raw)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file with one object per line is common: accept it as JSONL.
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(path, raw)
        raise DataError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path) from None
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        hint = f" (did you mean the list under '{lists[0]}'?)" if lists else ""
        raise DataError(f"expected a JSON list of rows, got an object{hint}", path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of rows, got {type(data).__name__}", path)
    return data


def _read_jsonl(path: Path, raw: bytes) -> list[Any]:
    rows = []
    for number, line in enumerate(_decode(path, raw).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON on line {number}: {exc.msg}", path) from None
    return rows


def _read_csv(path: Path, raw: bytes) -> list[dict[str, Any]]:
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(_decode(path, raw)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"invalid CSV: {exc}", path) from None
    return frame.to_dict(orient="records")


def _read_parquet(path: Path, raw: bytes) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        raise DataError(f"cannot read parquet: {exc}", path) from None
    return [_plain(row) for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    """numpy arrays / scalars from parquet -> plain lists / Python values (NaN -> None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value

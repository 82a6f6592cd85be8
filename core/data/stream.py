"""Read a data file's rows in batches, never the whole file at once: what the Arrow cache is built from.

Each row comes as its JSON text plus the line it is on (JSONL; for the other types the row number), so that every
later step parses the very object `readers.read_rows` would give, and row problems stay exactly the same:

- JSONL (and a .json file holding one object per line): the file's lines, split as `str.splitlines` splits them,
  blank lines skipped. Lines are parsed later (in parallel): a line that is not JSON, or not an object, is found
  there and reported as `read_rows` reports it.
- JSON (a list of objects): the list is walked element by element with the json module's own decoder; each
  element's text is the slice of the file it was read from.
- CSV: pandas in chunks, with `read_rows`' settings (every value text, nothing read as NaN).
- parquet: pyarrow record batches, converted to Python values as `read_rows` converts the whole table.
UTF-8 (with or without BOM) is tried first and GBK (gb18030) when it fails, as `read_rows` does.

Anything unusual (a file that is not valid JSON, a CSV that pandas refuses, a broken parquet file) is handed to
`readers.read_rows`, which reads the whole file and raises the exact error it always raised. Values that JSON
cannot hold (a parquet date, decimal or bytes) are kept as their text.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from core.data.readers import check_file, plain_value, read_rows
from core.errors import DataError

BATCH_ROWS = 10_000  # rows per batch handed to the writer
CHUNK_BYTES = 1 << 20  # bytes read at a time
ENCODINGS = ("utf-8-sig", "gb18030")  # as readers._decode tries them
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # what the json module skips between values

Batch = tuple[list[int], list[str]]  # (line or row numbers, JSON texts of the rows)


class _UnusualFileError(Exception):
    """The file is not what the streaming reader expects: `read_rows` says what is wrong with it."""


def row_batches(path: str | Path, restart: Callable[[], None]) -> Iterator[Batch]:
    """Every row of the file, in batches of (line numbers, JSON texts); file errors are `read_rows`' own.

    The rows may be read a second time from the start: when the file turns out not to be UTF-8 (then GBK is
    tried), or not to be what this reader expects (then `read_rows` reads it). `restart()` is called first, so
    that the caller can drop what it kept of the first pass."""
    path = Path(path)
    suffix = check_file(path)
    encodings = ENCODINGS if suffix != ".parquet" else ("",)
    for encoding in encodings:
        try:
            if suffix == ".jsonl":
                yield from _jsonl(path, encoding)
            elif suffix == ".json":
                yield from _json(path, encoding)
            elif suffix == ".csv":
                yield from _csv(path, encoding)
            else:
                yield from _parquet(path)
            return
        except UnicodeDecodeError:
            if encoding == encodings[-1]:
                raise DataError("data.not_utf8", path) from None
            restart()
        except _UnusualFileError:
            restart()
            yield from _from_read_rows(path)
            return


def _from_read_rows(path: Path) -> Iterator[Batch]:
    """The fallback: `read_rows` raises the file's exact error; should it read the file after all, its rows."""
    rows = read_rows(path)
    for start in range(0, len(rows), BATCH_ROWS):
        chunk = rows[start : start + BATCH_ROWS]
        yield list(range(start + 1, start + 1 + len(chunk))), [_dumps(row) for row in chunk]


def _dumps(row) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


def _decoded(path: Path, encoding: str, start: int = 0) -> Iterator[str]:
    """The file's text in pieces of about CHUNK_BYTES, from byte `start`."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as handle:
        handle.seek(start)
        while block := handle.read(CHUNK_BYTES):
            text = decoder.decode(block)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


def lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, line) as `text.splitlines()` of the whole decoded file would number them."""
    number, pending = 0, ""
    for piece in _decoded(path, encoding):
        text = pending + piece
        found = text.splitlines(keepends=True)
        last = found[-1] if found else ""
        # Keep back a last line without its line end, or ending in "\r" (the "\n" of a "\r\n" may come next).
        ended = bool(last) and len(last.splitlines()[0]) < len(last) and not last.endswith("\r")
        pending = "" if ended else last
        for line in text[: len(text) - len(pending)].splitlines():
            number += 1
            yield number, line
    for line in pending.splitlines():
        number += 1
        yield number, line


def _jsonl(path: Path, encoding: str) -> Iterator[Batch]:
    numbers: list[int] = []
    texts: list[str] = []
    for number, line in lines(path, encoding):
        if not line.strip():
            continue
        numbers.append(number)
        texts.append(line)
        if len(texts) == BATCH_ROWS:
            yield numbers, texts
            numbers, texts = [], []
    if texts:
        yield numbers, texts


class _Text:
    """The decoded file as a growing buffer for the json decoder, with the consumed start dropped now and then."""

    def __init__(self, path: Path, encoding: str):
        self.pieces = _decoded(path, encoding)
        self.buffer, self.pos, self.done = "", 0, False

    def more(self) -> bool:
        """Append the next piece; False at the end of the file."""
        piece = next(self.pieces, None)
        if piece is None:
            self.done = True
            return False
        if self.pos > CHUNK_BYTES:
            self.buffer, self.pos = self.buffer[self.pos :], 0
        self.buffer += piece
        return True

    def skip_whitespace(self) -> None:
        while True:
            self.pos = _WHITESPACE.match(self.buffer, self.pos).end()
            if self.pos < len(self.buffer) or not self.more():
                return

    def peek(self) -> str:
        self.skip_whitespace()
        return self.buffer[self.pos : self.pos + 1]

    def value(self, decoder: json.JSONDecoder) -> str:
        """The JSON text of the value at the current position (read on until it is complete)."""
        while True:
            try:
                _, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError:
                if self.more():
                    continue
                raise _UnusualFileError() from None
            if len(self.buffer) - end < 4 and self.more():
                continue  # a number cut short ("4.5e" of "4.5e3") parses: read on, and parse it again
            text = self.buffer[self.pos : end]
            self.pos = end
            return text


def _json(path: Path, encoding: str) -> Iterator[Batch]:
    reader, decoder = _Text(path, encoding), json.JSONDecoder()
    first = reader.peek()
    if first == "{":
        # One object per line in a .json file: readers._read_json reads it as JSONL (its "Extra data" case).
        reader.value(decoder)
        if not reader.peek():
            raise _UnusualFileError()  # a single object: read_rows explains what to do
        yield from _jsonl(path, encoding)
        return
    if first != "[":
        raise _UnusualFileError()
    reader.pos += 1
    number, texts = 0, []
    closed = reader.peek() == "]"
    reader.pos += closed
    while not closed:
        texts.append(reader.value(decoder))
        if len(texts) == BATCH_ROWS:
            yield list(range(number + 1, number + 1 + len(texts))), texts
            number, texts = number + len(texts), []
        separator = reader.peek()
        reader.pos += 1
        closed = separator == "]"
        if not closed and (separator != "," or reader.peek() in ("]", "")):
            raise _UnusualFileError()
    if reader.peek():
        raise _UnusualFileError()  # something after the list
    if texts:
        yield list(range(number + 1, number + 1 + len(texts))), texts


def _csv(path: Path, encoding: str) -> Iterator[Batch]:
    import pandas as pd

    number = 0
    try:
        with open(path, encoding=encoding, newline="") as handle:
            for frame in pd.read_csv(handle, dtype=str, keep_default_na=False, chunksize=BATCH_ROWS):
                rows = frame.to_dict(orient="records")
                yield list(range(number + 1, number + 1 + len(rows))), [_dumps(row) for row in rows]
                number += len(rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        raise _UnusualFileError() from None


def _parquet(path: Path) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        # pandas turns a whole integer column with any null into floats: do the same batch by batch.
        floats = _integer_columns_with_nulls(table)
        number = 0
        for batch in table.iter_batches(batch_size=BATCH_ROWS):
            part = pa.Table.from_batches([batch])
            for name in floats:
                index = part.schema.get_field_index(name)
                part = part.set_column(index, name, part.column(index).cast(pa.float64()))
            rows = [plain_value(row) for row in part.to_pandas().to_dict(orient="records")]
            yield list(range(number + 1, number + 1 + len(rows))), [_dumps(row) for row in rows]
            number += len(rows)
    except (OSError, ValueError, pa.ArrowException):
        raise _UnusualFileError() from None


def _integer_columns_with_nulls(table) -> list[str]:
    import pyarrow as pa

    names = [field.name for field in table.schema_arrow if pa.types.is_integer(field.type)]
    if not names:
        return []
    counts = table.read(columns=names)
    return [name for name in names if counts.column(name).null_count]

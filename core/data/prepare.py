"""A data file's rows -> checked -> tokenized, on `datasets` (Arrow, memory-mapped), each step cached.

1. rows:      the file read in batches (core/data/stream.py) into an Arrow table of row texts. Key: the file's
              content hash and type.
2. checked:   every row parsed, its columns mapped and converted (`Dataset.map(batched=True, num_proc=...)`),
              with the exact report of today's reader: a line that is not JSON or a row that is not an object
              fails the file (the first one, as `read_rows` fails it), other bad rows are RowProblems. Kept: the
              format, the numbers of the usable rows and the problems. Key: rows + format asked + column mapping.
3. tokenized: the usable rows (the first `max_samples`) as input_ids / labels / attention_mask, written by
              `map(batched=True, num_proc=...)` with the template encoder's batch call, truncated at cutoff_len;
              samples with no answer token left are reported by number. Key: checked + the tokenizer's own
              fingerprint + template + cutoff_len + the number of samples.
The validation split is drawn when loading (cheap: a selection of indices), exactly as `tokenize_conversations`
draws it. Entries live in the data cache (core/data/cache.py). Large files are processed by several processes:
one per core (at most 8), from PARALLEL_FROM_ROWS rows on; GLM_WORKBENCH_DATA_PROCS sets the number.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from core.data.cache import Corrupt, entry, file_digest, is_cached, make_key
from core.data.formats import Conversation, RowError, RowProblem, convert_row, parse_columns, rename_row, resolve_format
from core.data.images import image_check
from core.data.readers import check_file, resolve_dataset
from core.data.template import IGNORE_INDEX, TemplateEncoder
from core.errors import DataError
from core.i18n import Message, message

log = logging.getLogger("glm_workbench")
PARALLEL_FROM_ROWS = 20_000  # below this, one process does it (starting workers costs more than it saves)
MAX_PROCESSES = 8
# Rows per call of a map function, and per record batch written. Opening a memory-mapped Arrow file reads every
# batch's header (the kernel maps 64 KB around each: 32 MB for a million rows in 2,000-row batches, dropped again
# by _open_arrow); bigger batches hold more rows as Python objects in each worker at a time.
MAP_BATCH = 2_000

OK, ROW_PROBLEM, NOT_JSON, NOT_OBJECT = 0, 1, 2, 3  # what checking says of each row


def processes(rows: int) -> int | None:
    """Worker processes for a map over `rows` rows; None: the calling process does it."""
    wanted = os.environ.get("GLM_WORKBENCH_DATA_PROCS", "").strip()
    if wanted:
        count = int(wanted)
    elif rows < PARALLEL_FROM_ROWS:
        return None
    else:
        count = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    count = min(count, MAX_PROCESSES, max(rows // MAP_BATCH, 1))
    return count if count > 1 else None


def _datasets():
    import datasets

    datasets.disable_progress_bars()  # the workbench reports progress itself (log.txt, the page)
    return datasets


@contextmanager
def _heap_left_alone():
    """While rows are processed, the objects alive before (torch's and transformers' millions) are left out of
    garbage collection: each collection would walk them all again, a fifth of the time spent. Forked workers
    inherit it (and their copies of those objects' pages stay shared)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _environ_kept():
    """`datasets`' `map(num_proc=...)` puts back a deep copy of the environment it saved (`os.environ =
    prev_env`): every reference to the real `os.environ` taken before (pytest's monkeypatch, a library's module
    global) then writes to a mapping nobody reads, and `putenv` stops following. The real one is put back, holding
    what the copy holds."""
    environ = os.environ
    try:
        yield
    finally:
        if os.environ is not environ:
            copy, os.environ = os.environ, environ
            for name in set(environ) - set(copy):
                del environ[name]
            environ.update(copy)


def _open_arrow(files: list[Path], rows: int):
    """A memory-mapped Dataset of the entry's Arrow files; Corrupt when they cannot be read or are short."""
    import pyarrow as pa

    ds = _datasets()
    try:
        parts = [ds.Dataset.from_file(str(file)) for file in files]
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise Corrupt(str(exc)) from None
    dataset = parts[0] if len(parts) == 1 else ds.concatenate_datasets(parts)
    if len(dataset) != rows:
        raise Corrupt(f"{len(dataset)} rows, not {rows}")
    for file in files:
        release_pages(large(file))  # the headers read to open them: resident memory stays flat
    return dataset


# ---- 1. rows ----------------------------------------------------------------------------------------------------


@dataclass
class Rows:
    """A data file's rows as an Arrow table: `line` (its line in a JSONL file, else the row number), `text`."""

    path: Path
    key: str
    dataset: Any  # datasets.Dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def page(self, start: int, stop: int) -> list[Any]:
        return [json.loads(text) for text in self.dataset[start:stop]["text"]]

    @property
    def file(self) -> str:
        return self.dataset.cache_files[0]["filename"]


def read(name_or_path: str) -> Rows:
    """The rows of a demo dataset or a file, from the cache or read into it now."""
    from core.data import stream

    path = resolve_dataset(name_or_path)
    key = _rows_key(path)
    ds = _datasets()

    def build(staging: Path) -> dict[str, Any]:
        started, target = time.time(), staging / "rows.arrow"
        features = ds.Features({"line": ds.Value("int64"), "text": ds.Value("string")})
        writer = ds.arrow_writer.ArrowWriter(features=features, path=str(target), writer_batch_size=stream.BATCH_ROWS)

        def restart() -> None:  # the file is read again from its start (another encoding, or read_rows)
            nonlocal writer
            writer.close()
            writer = ds.arrow_writer.ArrowWriter(
                features=features, path=str(target), writer_batch_size=stream.BATCH_ROWS
            )

        try:
            for numbers, texts in stream.row_batches(path, restart):
                writer.write_batch({"line": numbers, "text": texts})
            count, _ = writer.finalize()
        finally:
            writer.close()
        if not count:
            raise DataError("data.no_rows", path)
        log.info("data: read %s rows of %s in %.1f s", f"{count:,}", path.name, time.time() - started)
        return {"rows": count, "file": path.name}

    def open_rows(folder: Path, meta: dict[str, Any]) -> Rows:
        return Rows(path, key, _open_arrow([folder / "rows.arrow"], meta["rows"]))

    return entry(f"rows-{key}", build, open_rows)


def _rows_key(path: Path) -> str:
    suffix = check_file(path)  # the file's own errors come first, before anything is hashed or cached
    return make_key("rows", file_digest(path), suffix)


def _checked_key(rows_key: str, fmt: str, mapping: dict[str, str]) -> str:
    return make_key("checked", rows_key, fmt, sorted(mapping.items()))


# ---- 2. checked -------------------------------------------------------------------------------------------------


RELEASE_FROM_BYTES = 64 << 20  # smaller files keep their few pages (looking up the mappings costs milliseconds)


def large(path: str | Path) -> str:
    """`path` (resolved, as the process's mappings name it) when its pages are worth releasing, else ""."""
    return os.path.realpath(path) if os.path.getsize(path) >= RELEASE_FROM_BYTES else ""


def release_pages(path: str) -> None:
    """Drop this process's resident pages of the memory-mapped file `path` (Linux, madvise MADV_DONTNEED): the data
    stays in the page cache and is mapped again when touched. A worker reading its share of a million rows would
    otherwise keep every page it read, and its resident memory would grow with the file. "" does nothing."""
    if not path:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            regions = [line.split()[0] for line in maps if line.rstrip().endswith(path)]
    except OSError:
        return
    if not regions:
        return
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    for region in regions:
        start, end = (int(value, 16) for value in region.split("-"))
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # MADV_DONTNEED


def check_batch(
    lines: list[int], texts: list[str], fmt: str | None, mapping: dict[str, str], source: str = "", base_dir: str = ""
) -> dict[str, list]:
    """What is wrong with each row, if anything (see OK, ROW_PROBLEM, NOT_JSON, NOT_OBJECT). An image row's
    images are opened, from `base_dir` (the data file's folder) where they are relative paths."""
    release_pages(source)
    inspect = image_check(Path(base_dir) if base_dir else None)
    status: list[int] = []
    problem: list[str | None] = []
    for line, text in zip(lines, texts):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            status.append(NOT_JSON)
            problem.append(json.dumps({"line": line, "detail": exc.msg}))
            continue
        if not isinstance(row, dict):
            status.append(NOT_OBJECT)
            problem.append(type(row).__name__)
            continue
        if fmt is not None:
            try:
                convert_row(rename_row(row, mapping), fmt, inspect)
            except RowError as exc:
                status.append(ROW_PROBLEM)
                problem.append(json.dumps(exc.message.to_json(), ensure_ascii=False))
                continue
        status.append(OK)
        problem.append(None)
    return {"status": status, "problem": problem}


@dataclass
class Checked:
    """A data file checked in one format: what the Data tab shows, and what tokenizing starts from."""

    rows: Rows
    key: str
    format: str
    mapping: dict[str, str]
    usable: Any  # numpy int64 array: the usable rows' positions in `rows`, in order
    problem_count: int
    folder: Path

    @property
    def path(self) -> Path:
        return self.rows.path

    @property
    def row_count(self) -> int:
        return len(self.rows)

    @property
    def usable_count(self) -> int:
        return len(self.usable)

    def page(self, number: int, size: int) -> list[Any]:
        """The rows of page `number` (from 1) as they are in the file."""
        start = (max(number, 1) - 1) * size
        return self.rows.page(start, start + size)

    def problems(self, limit: int | None = None) -> list[RowProblem]:
        """The rows left out, in file order (all of them, or the first `limit`)."""
        return list(islice(_read_problems(self.folder / "problems.jsonl"), limit))

    def conversations(self, positions: Sequence[int]) -> list[Conversation]:
        """The usable conversations at these positions (0 = the first usable row)."""
        if not len(positions):
            return []
        texts = self.rows.dataset[[int(self.usable[p]) for p in positions]]["text"]
        return [convert_row(rename_row(json.loads(text), self.mapping), self.format) for text in texts]


def _read_problems(file: Path) -> Iterator[RowProblem]:
    if not file.is_file():
        return
    with open(file, encoding="utf-8") as handle:
        for line in handle:
            found = json.loads(line)
            problem = found["problem"]
            yield RowProblem(found["row"], Message.from_json(problem) or Message(problem["code"], problem["params"]))


def check(name_or_path: str, fmt: str = "auto", columns: str = "") -> Checked:
    """Read (or find in the cache) and check a dataset: its format, usable rows and row problems. Raises the same
    DataError that reading it whole and converting it raises (core/data/dataset.py load_conversations)."""
    import numpy as np

    rows = read(name_or_path)
    path = rows.path
    pending: DataError | None = None  # raised once the file itself is known to be fine, as load_conversations does
    try:
        mapping = parse_columns(columns)
    except DataError as exc:
        mapping, pending = {}, exc.located(path)
    used = fmt
    if pending is None:
        try:
            first = json.loads(rows.dataset[0]["text"])
            used = resolve_format([rename_row(first, mapping)], fmt) if isinstance(first, dict) else None
        except json.JSONDecodeError:
            used = None  # the first line is not JSON: checking every row says so
        except DataError as exc:
            pending = exc.located(path)
    key = _checked_key(rows.key, fmt, mapping)

    def build(staging: Path) -> dict[str, Any]:
        started = time.time()
        with _heap_left_alone(), _environ_kept():
            checked = rows.dataset.map(
                check_batch,
                batched=True,
                batch_size=MAP_BATCH,
                input_columns=["line", "text"],
                remove_columns=["line", "text"],
                fn_kwargs={
                    "fmt": used if pending is None else None,
                    "mapping": mapping,
                    "source": large(rows.file),
                    "base_dir": str(path.parent),
                },
                features=_datasets().Features(
                    {"status": _datasets().Value("int8"), "problem": _datasets().Value("string")}
                ),
                keep_in_memory=True,
                num_proc=processes(len(rows)),
                new_fingerprint=key,
            )
        status = np.asarray(checked.data.column("status").to_numpy(), dtype=np.int8)
        _raise_file_problem(checked, status, path)
        if pending is not None:
            raise pending
        if used is None:
            raise RuntimeError("the first row failed to parse, but checking every row found nothing wrong")
        bad = np.flatnonzero(status == ROW_PROBLEM)
        column = checked.data.column("problem")
        with open(staging / "problems.jsonl", "w", encoding="utf-8") as handle:
            for start in range(0, len(bad), 10_000):
                chosen = bad[start : start + 10_000]
                for index, text in zip(chosen, column.take(chosen).to_pylist()):
                    handle.write(json.dumps({"row": int(index) + 1, "problem": json.loads(text)}, ensure_ascii=False))
                    handle.write("\n")
        usable = np.flatnonzero(status == OK).astype(np.int64)
        if not len(usable):
            first_problem = next(_read_problems(staging / "problems.jsonl"))
            raise DataError(
                "data.no_usable_rows", path, format=used, rejected=len(bad), first=first_problem.as_message()
            )
        np.save(staging / "usable.npy", usable)
        log.info(
            "data: checked %s rows of %s in %.1f s: format %s, %s usable",
            f"{len(status):,}",
            path.name,
            time.time() - started,
            used,
            f"{len(usable):,}",
        )
        return {"format": used, "rows": len(status), "usable": len(usable), "problems": len(bad)}

    def open_checked(folder: Path, meta: dict[str, Any]) -> Checked:
        try:
            usable = np.load(folder / "usable.npy")
        except (OSError, ValueError) as exc:
            raise Corrupt(str(exc)) from None
        if len(usable) != meta["usable"] or meta["rows"] != len(rows):
            raise Corrupt("usable rows")
        return Checked(rows, key, meta["format"], mapping, usable, meta["problems"], folder)

    return entry(f"checked-{key}", build, open_checked)


def _raise_file_problem(checked, status, path: Path) -> None:
    """A line that is not JSON (the first), else a row that is not an object (the first): as read_rows says."""
    import numpy as np

    for kind in (NOT_JSON, NOT_OBJECT):
        found = np.flatnonzero(status == kind)
        if len(found):
            index = int(found[0])
            detail = checked[index]["problem"]
            if kind == NOT_JSON:
                where = json.loads(detail)
                raise DataError("data.invalid_jsonl", path, line=where["line"], detail=where["detail"])
            raise DataError("data.row_not_object", path, index + 1, got=detail)


# ---- 3. tokenized -----------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides how a tokenizer encodes text: a fast tokenizer's whole definition (its tokenizer.json),
    otherwise its class, vocabulary, settings and vocabulary file."""
    import xxhash

    digest = xxhash.xxh3_128()
    digest.update(f"{type(tokenizer).__name__}|{getattr(tokenizer, 'split_special_tokens', False)}|".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
        digest.update(json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str).encode())
        vocab_file = getattr(tokenizer, "vocab_file", None)
        if isinstance(vocab_file, str) and os.path.isfile(vocab_file):
            digest.update(file_digest(vocab_file).encode())
    return digest.hexdigest()


def cut_sample(input_ids: list[int], labels: list[int], cutoff_len: int) -> tuple[dict[str, list[int]] | None, bool]:
    """(the training sample, whether it was truncated): cut at cutoff_len; None when no answer token is left."""
    truncated = len(input_ids) > cutoff_len
    if truncated:
        input_ids, labels = input_ids[:cutoff_len], labels[:cutoff_len]
    if labels.count(IGNORE_INDEX) == len(labels):
        return None, truncated
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}, truncated


def tokenize_batch(
    texts: list[str],
    indices: list[int],
    fmt: str,
    mapping: dict[str, str],
    encoder: TemplateEncoder,
    cutoff_len: int,
    source: str = "",
) -> dict[str, list]:
    release_pages(source)
    conversations = [convert_row(rename_row(json.loads(text), mapping), fmt) for text in texts]
    for index, conversation in zip(indices, conversations):
        try:
            encoder.check(conversation)
        except RowError as exc:  # a row the template cannot express: named in the main process (tokenize)
            raise TemplateRowError(index, json.dumps(exc.message.to_json(), ensure_ascii=False)) from None
    out: dict[str, list] = {"input_ids": [], "labels": [], "attention_mask": [], "sample": [], "truncated": []}
    for index, (input_ids, labels) in zip(indices, encoder.encode_batch(conversations)):
        sample, truncated = cut_sample(input_ids, labels, cutoff_len)
        if sample is None:
            continue
        for name, value in sample.items():
            out[name].append(value)
        out["sample"].append(index + 1)
        out["truncated"].append(truncated)
    return out


class TemplateRowError(Exception):
    """A usable row (by its position among them) that the template cannot express, with the reason as JSON: plain
    arguments, so that it crosses from a `datasets` worker process intact."""


class ProblemList(Sequence[RowProblem]):
    """The rows a training run leaves out: the checked file's row problems (read from the cache as they are
    needed, so a million of them never sit in memory), then the samples with no answer token within cutoff_len."""

    def __init__(self, file: Path, rows: int, samples: Sequence[int], cutoff_len: int):
        self.file, self.rows, self.samples, self.cutoff_len = file, rows, list(samples), cutoff_len

    def __len__(self) -> int:
        return self.rows + len(self.samples)

    def __iter__(self) -> Iterator[RowProblem]:
        if self.rows:
            yield from _read_problems(self.file)
        beyond = message("row.answer_beyond_cutoff", cutoff_len=self.cutoff_len)
        for number in self.samples:
            yield RowProblem(number, beyond, "sample")

    def __getitem__(self, key):
        if isinstance(key, slice):
            wanted = range(len(self))[key]
            if wanted.step > 0:
                return list(islice(self, wanted.start, wanted.stop, wanted.step))
            return [list(self)[i] for i in wanted]
        index = range(len(self))[key]
        return next(islice(self, index, None))


@dataclass
class Tokenized:
    dataset: Any  # datasets.Dataset: input_ids, labels, attention_mask
    dropped: list[int]  # sample numbers with no answer token within cutoff_len
    truncated: int


TOKEN_COLUMNS = ("input_ids", "labels", "attention_mask")


@contextmanager
def _rows_named(checked: Checked):
    """A TemplateRowError becomes the DataError that names the file and the row (e.g. tool calls on GLM-4's
    template, which cannot express them: training without them would be silently wrong)."""
    try:
        yield
    except TemplateRowError as exc:
        position, problem = exc.args
        found = json.loads(problem)
        reason = Message.from_json(found) or Message(found["code"], found["params"])
        raise DataError(reason, checked.path, row=int(checked.usable[position]) + 1) from None


def tokenize(checked: Checked, tokenizer, template: str, cutoff_len: int, max_samples: int = 0) -> Tokenized:
    """The checked file's first `max_samples` usable rows (all when 0) as training samples, cached."""
    import numpy as np

    ds = _datasets()
    encoder = TemplateEncoder(tokenizer, template)
    for token in (*encoder.template.prefix, encoder.template.end_token):
        encoder.token_id(token)  # a token missing from the tokenizer is named here, not in a worker process
    count = min(max_samples, checked.usable_count) if max_samples else checked.usable_count
    key = make_key("tokens", checked.key, tokenizer_fingerprint(tokenizer), encoder.template.name, cutoff_len, count)
    features = ds.Features(
        {
            "input_ids": ds.List(ds.Value("int32")),
            "labels": ds.List(ds.Value("int32")),
            "attention_mask": ds.List(ds.Value("int8")),
            "sample": ds.Value("int32"),
            "truncated": ds.Value("bool"),
        }
    )

    def build(staging: Path) -> dict[str, Any]:
        started, workers = time.time(), processes(count)
        usable = checked.usable[:count]
        source = checked.rows.dataset
        if int(usable[-1]) == len(usable) - 1:  # the first rows, every one usable: a slice, no index
            if len(usable) < len(source):
                source = source.select(range(len(usable)), new_fingerprint=f"{key}-rows")
        else:
            source = source.select(usable, keep_in_memory=True, new_fingerprint=f"{key}-rows")
        with _heap_left_alone(), _environ_kept(), _rows_named(checked):
            tokenized = source.map(
                tokenize_batch,
                batched=True,
                batch_size=MAP_BATCH,
                with_indices=True,
                input_columns=["text"],
                remove_columns=["line", "text"],
                fn_kwargs={
                    "fmt": checked.format,
                    "mapping": checked.mapping,
                    "encoder": encoder,
                    "cutoff_len": cutoff_len,
                    "source": large(checked.rows.file),
                },
                features=features,
                cache_file_name=str(staging / "tokens.arrow"),
                load_from_cache_file=False,
                writer_batch_size=MAP_BATCH,
                num_proc=workers,
                new_fingerprint=key,
            )
        samples = np.asarray(tokenized.data.column("sample").to_numpy(), dtype=np.int64)
        kept = np.ones(count + 1, dtype=bool)
        kept[0] = False
        kept[samples] = False
        dropped = [int(number) for number in np.flatnonzero(kept)]
        truncated = int(np.count_nonzero(tokenized.data.column("truncated").to_numpy()))
        for shard in staging.glob("tokens*.arrow"):
            release_pages(large(shard))
        if not len(samples):
            raise DataError("data.all_beyond_cutoff", checked.path, cutoff_len=cutoff_len)
        shards = sorted(p.name for p in staging.glob("tokens*.arrow"))
        seconds = time.time() - started
        log.info(
            "data: tokenized %s samples of %s in %.1f s (%s rows/s, %s)",
            f"{count:,}",
            checked.path.name,
            seconds,
            f"{count / max(seconds, 1e-9):,.0f}",
            f"{workers} processes" if workers else "1 process",
        )
        return {"samples": len(samples), "dropped": dropped, "truncated": truncated + len(dropped), "shards": shards}

    def open_tokens(folder: Path, meta: dict[str, Any]) -> Tokenized:
        dataset = _open_arrow([folder / name for name in meta["shards"]], meta["samples"])
        dataset = dataset.remove_columns(["sample", "truncated"])
        return Tokenized(dataset, meta["dropped"], meta["truncated"])

    return entry(f"tokens-{key}", build, open_tokens)


def held_out_positions(samples: int, val_size: float, seed: int, source: str | Path | None = None) -> list[int]:
    """Which of `samples` samples (positions, ascending) the validation set holds: `val_size` of them (a count
    when >= 1), drawn by `seed`, as tokenize_conversations draws them."""
    eval_count = int(val_size) if val_size >= 1 else int(round(samples * val_size))
    if not eval_count:
        return []
    if eval_count >= samples:
        raise DataError("data.val_size_too_large", source, val_size=val_size, samples=samples)
    order = list(range(samples))
    random.Random(seed).shuffle(order)
    return sorted(order[:eval_count])


def split(dataset, eval_indices: list[int], val_size: float, seed: int):
    """(train, eval) at `eval_indices` (held_out_positions' draw), as tokenize_conversations splits a list of samples:
    the same samples on each side."""
    samples = len(dataset)
    if not eval_indices:
        return dataset, []
    held = set(eval_indices)
    train_indices = [i for i in range(samples) if i not in held]
    fingerprint = make_key("split", samples, val_size, seed)
    return (
        dataset.select(train_indices, keep_in_memory=True, new_fingerprint=f"{fingerprint}-train"),
        dataset.select(eval_indices, keep_in_memory=True, new_fingerprint=f"{fingerprint}-eval"),
    )


# ---- previews ---------------------------------------------------------------------------------------------------

PEEK_FROM_BYTES = 8 << 20  # smaller files are checked whole at once (under a second); larger ones peeked first
PEEK_MAX_ROWS = 10_000  # pages further in wait for the check (reading up to them takes as long)


@dataclass
class Peek:
    """The first rows of a file, straight from the file (nothing cached yet), with the format they suggest."""

    path: Path
    rows: list[dict[str, Any]]
    format: str | None  # None: the first row fits no format (the full check says why)


def peek(name_or_path: str, fmt: str, columns: str, count: int) -> Peek | None:
    """The first `count` rows of a large file, read from its start (the first page of a file of any size shows at
    once); None when there is nothing to gain: a small file or one already checked (the check is as quick), a
    page far into the file, or anything unusual about the first rows (the full check explains it)."""
    from contextlib import closing

    from core.data import stream

    try:
        path = resolve_dataset(name_or_path)
        if path.stat().st_size < PEEK_FROM_BYTES or count > PEEK_MAX_ROWS:
            return None
        rows_key = _rows_key(path)
        if is_cached(f"rows-{rows_key}") and is_cached(
            f"checked-{_checked_key(rows_key, fmt, parse_columns(columns))}"
        ):
            return None  # checked before: the check is a look-up
        rows: list[Any] = []
        with closing(stream.row_batches(path, rows.clear)) as batches:
            for _, texts in batches:
                rows += [json.loads(text) for text in texts[: count - len(rows)]]
                if len(rows) >= count:
                    break
        if not rows or not all(isinstance(row, dict) for row in rows):
            return None
        try:
            found = resolve_format([rename_row(rows[0], parse_columns(columns))], fmt)
        except DataError:
            found = None
        return Peek(path, rows, found)
    except (DataError, OSError, ValueError):
        return None

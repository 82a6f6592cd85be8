"""From a dataset name or file to tokenized train/validation sets, with a report of what was dropped."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.data.formats import Conversation, ConversionResult, RowProblem, convert, parse_columns, rename_columns
from core.data.images import image_check
from core.data.readers import read_rows, resolve_dataset
from core.data.template import TemplateEncoder
from core.errors import DataError
from core.i18n import message


@dataclass
class LoadedData:
    """A dataset as the Data tab shows it: raw rows, detected format, conversations, row problems."""

    path: str
    rows: list[dict[str, Any]]
    result: ConversionResult

    @property
    def format(self) -> str:
        return self.result.format

    @property
    def conversations(self) -> list[Conversation]:
        return self.result.conversations


def load_conversations(name_or_path: str, fmt: str = "auto", columns: str = "") -> LoadedData:
    """Read, map columns (`columns`: 'your_column=standard_column, ...'), detect or apply the format, convert."""
    path = resolve_dataset(name_or_path)
    rows = read_rows(path)
    try:
        result = convert(rename_columns(rows, parse_columns(columns)), fmt, inspect=image_check(path.parent))
    except DataError as exc:
        raise exc.located(path) from None  # the same kind of error, now naming the file
    return LoadedData(str(path), rows, result)


@dataclass
class TokenizedData:
    """Training samples (input_ids, labels, attention_mask): a memory-mapped `datasets.Dataset` from the data
    cache, or lists of dicts (tokenize_conversations); either goes to the Trainer as it is."""

    train: Any
    eval: Any = field(default_factory=list)
    format: str = ""
    problems: Sequence[RowProblem] = field(default_factory=list)
    truncated: int = 0
    rows: int | None = None  # usable rows, where they are not one sample each (KTO: a pair gives two)
    # The conversations the validation samples came from (val_size): a run keeps them, so that Evaluate and the
    # Arena score what it never trained on.
    held_out: list[Conversation] = field(default_factory=list)


def tokenize_dataset(
    name_or_path: str,
    tokenizer,
    template: str,
    cutoff_len: int,
    fmt: str = "auto",
    val_size: float = 0.0,
    max_samples: int = 0,
    seed: int = 42,
    columns: str = "",
) -> TokenizedData:
    """Tokenize with loss masks; split off a validation set; drop samples that keep no answer token. The same
    samples, split and report as tokenize_conversations over load_conversations gives, through the data cache
    (core/data/prepare.py): read, checked and tokenized once per file, template, tokenizer and cutoff."""
    from core.data import prepare

    checked = prepare.check(name_or_path, fmt, columns)
    tokens = prepare.tokenize(checked, tokenizer, template, cutoff_len, max_samples)
    positions = prepare.held_out_positions(len(tokens.dataset), val_size, seed, checked.path)
    train, eval_samples = prepare.split(tokens.dataset, positions, val_size, seed)
    problems = prepare.ProblemList(checked.folder / "problems.jsonl", checked.problem_count, tokens.dropped, cutoff_len)
    held_out = []
    if positions:  # the rows behind the validation samples (a dropped row made no sample)
        dropped = set(tokens.dropped)
        kept = [i for i in range(len(tokens.dataset) + len(dropped)) if i + 1 not in dropped]
        held_out = checked.conversations([kept[p] for p in positions])
    return TokenizedData(train, eval_samples, checked.format, problems, tokens.truncated, held_out=held_out)


def tokenize_conversations(
    conversations: list[Conversation],
    tokenizer,
    template: str,
    cutoff_len: int,
    val_size: float = 0.0,
    seed: int = 42,
    source: str = "",
) -> TokenizedData:
    """Tokenize conversations held in memory (the distillation method's teacher-written answers) one by one: the
    reference the cached path (tokenize_dataset) is tested against."""
    from core.data.prepare import cut_sample

    encoder = TemplateEncoder(tokenizer, template)
    samples, problems, truncated = [], [], 0
    for index, conversation in enumerate(conversations, start=1):
        sample, cut = cut_sample(*encoder.encode(conversation, cutoff_len=10**9), cutoff_len)
        truncated += cut
        if sample is None:
            problems.append(RowProblem(index, message("row.answer_beyond_cutoff", cutoff_len=cutoff_len), "sample"))
            continue
        samples.append(sample)
    if not samples:
        raise DataError("data.all_beyond_cutoff", source or None, cutoff_len=cutoff_len)
    eval_count = int(val_size) if val_size >= 1 else int(round(len(samples) * val_size))
    eval_samples: list[dict[str, list[int]]] = []
    if eval_count:
        if eval_count >= len(samples):
            raise DataError("data.val_size_too_large", source or None, val_size=val_size, samples=len(samples))
        order = list(range(len(samples)))
        random.Random(seed).shuffle(order)
        held = set(order[:eval_count])
        eval_samples = [samples[i] for i in sorted(held)]
        samples = [s for i, s in enumerate(samples) if i not in held]
    return TokenizedData(samples, eval_samples, "", problems, truncated)

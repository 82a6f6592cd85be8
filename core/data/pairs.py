"""Preference data: pairwise conversations -> token ids for a preference stage (core/stages/), by its `samples`.

Each sample is built by the chat template SFT and chat use (`TemplateEncoder.encode_completion`): the prompt ids
are what the chat feeds the model, and prompt + completion is what SFT would train on. So a preference run sees
its conversations exactly as the SFT run before it and the chat after it do.

- PAIRS (dpo, orpo, simpo): one sample per pair, `prompt_ids`, `chosen_ids`, `rejected_ids`.
- UNPAIRED (kto): unpaired samples, `prompt_ids`, `completion_ids`, `label` (desirable or not): a pair gives two
  (chosen: desirable, rejected: undesirable), a row with LLaMA-Factory's `kto_tag` one. KTO's trainer reads its
  samples in order (its KL term pairs each completion with a neighbour's prompt), so the training samples are
  shuffled here, once, with the run's seed.

Prompt + completion longer than cutoff_len keeps the prompt and cuts the answers (both sides alike); a prompt that
leaves no room for an answer skips the row. Rows that hold no pair (or, for KTO, no label either) are reported
one by one, like any row problem.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from core.data.dataset import TokenizedData, load_conversations
from core.data.formats import Conversation, RowProblem
from core.data.template import TemplateEncoder
from core.errors import DataError
from core.i18n import message

if TYPE_CHECKING:
    from core.stages.base import Stage

# What one training sample of a stage holds (its `samples`): the data layer knows the shapes, and each stage
# (core/stages/) names one, so the data never looks a stage up in the registry above it.
ROWS = "rows"  # conversations to learn: ids + labels (core/data/dataset.py)
PAIRS = "pairs"  # a chosen and a rejected answer per prompt, side by side
UNPAIRED = "unpaired"  # answers marked desirable or not, one sample each


def unpaired(stage: Stage) -> bool:
    """Whether the stage takes answers one by one, each marked desirable or not (KTO), instead of pairs."""
    return stage.samples == UNPAIRED


def row_problem(conversation: Conversation, stage: Stage) -> str | None:
    """The code of what keeps a converted row out of this stage's data, or None when it is usable."""
    if conversation.is_pair:
        return None
    if unpaired(stage):
        return None if conversation.label is not None else "row.no_kto_label"
    return "row.not_a_pair"


def check_preference_rows(name_or_path: str, stage: Stage, fmt: str = "auto", columns: str = "") -> None:
    """Refuse, before a run starts, a dataset none of whose rows this stage can use (an SFT file for DPO)."""
    loaded = load_conversations(name_or_path, fmt, columns)
    if not any(row_problem(conversation, stage) is None for conversation in loaded.conversations):
        raise DataError(_nothing_usable(stage), loaded.path, format=loaded.format, stage=stage.name)


def _nothing_usable(stage: Stage) -> str:
    return "data.no_kto_rows" if unpaired(stage) else "data.no_pairs"


def tokenize_preferences(
    name_or_path: str,
    tokenizer,
    template: str,
    cutoff_len: int,
    stage: Stage,
    fmt: str = "auto",
    val_size: float = 0.0,
    max_samples: int = 0,
    seed: int = 42,
    columns: str = "",
) -> TokenizedData:
    loaded = load_conversations(name_or_path, fmt, columns)
    conversations = loaded.conversations[:max_samples] if max_samples else loaded.conversations
    data = encode_preferences(
        conversations, tokenizer, template, cutoff_len, stage, val_size, seed, loaded.path, loaded.format
    )
    data.format, data.problems = loaded.format, list(loaded.result.problems) + data.problems
    return data


def encode_preferences(
    conversations: list[Conversation],
    tokenizer,
    template: str,
    cutoff_len: int,
    stage: Stage,
    val_size: float = 0.0,
    seed: int = 42,
    source: str = "",
    fmt: str = "",
) -> TokenizedData:
    """Tokenize for `stage`; split the validation set by row (a pair's two KTO samples stay together)."""
    encoder = TemplateEncoder(tokenizer, template)
    rows: list[list[dict[str, Any]]] = []
    problems: list[RowProblem] = []
    truncated = 0
    for index, conversation in enumerate(conversations, start=1):
        code = row_problem(conversation, stage)
        if code is not None:
            problems.append(RowProblem(index, message(code)))
            continue
        samples, cut = _encode_row(encoder, conversation, stage, cutoff_len)
        if samples is None:
            problems.append(RowProblem(index, message("row.answer_beyond_cutoff", cutoff_len=cutoff_len), "sample"))
            continue
        truncated += cut
        rows.append(samples)
    if not rows:
        raise DataError(_nothing_usable(stage), source or None, format=fmt or "?", stage=stage.name)
    eval_count = int(val_size) if val_size >= 1 else int(round(len(rows) * val_size))
    held: set[int] = set()
    if eval_count:
        if eval_count >= len(rows):
            raise DataError("data.val_size_too_large", source or None, val_size=val_size, samples=len(rows))
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        held = set(order[:eval_count])
    train = [sample for i, samples in enumerate(rows) if i not in held for sample in samples]
    evaluation = [sample for i, samples in enumerate(rows) if i in held for sample in samples]
    if unpaired(stage):
        random.Random(seed).shuffle(train)
    return TokenizedData(train, evaluation, "", problems, truncated, rows=len(rows))


def _encode_row(
    encoder: TemplateEncoder, conversation: Conversation, stage: Stage, cutoff_len: int
) -> tuple[list[dict[str, Any]] | None, int]:
    """The row's samples and whether an answer was cut at cutoff_len; (None, 0) when the prompt fills it."""
    history, chosen = conversation.messages[:-1], conversation.messages[-1]["content"]
    tools = conversation.tools
    prompt, chosen_ids = encoder.encode_completion(history, chosen, conversation.system, tools)
    room = cutoff_len - len(prompt)
    if room < 1:
        return None, 0
    if conversation.is_pair:
        _, rejected_ids = encoder.encode_completion(history, conversation.rejected, conversation.system, tools)
        cut = int(len(chosen_ids) > room or len(rejected_ids) > room)
        chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
        if unpaired(stage):
            return [
                {"prompt_ids": prompt, "completion_ids": chosen_ids, "label": True},
                {"prompt_ids": prompt, "completion_ids": rejected_ids, "label": False},
            ], cut
        return [{"prompt_ids": prompt, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}], cut
    sample = {"prompt_ids": prompt, "completion_ids": chosen_ids[:room], "label": bool(conversation.label)}
    return [sample], int(len(chosen_ids) > room)

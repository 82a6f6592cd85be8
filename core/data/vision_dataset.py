"""A data file with images -> a GLM-V model's training samples, with the same report and split as the text path.

Rows are checked once through the data cache (core/data/prepare.py: format, row problems, every image opened), then
each usable row is encoded here with the model's own template and image processor (core/data/multimodal.py). The
token ids are kept (each image's tokens counted from its size alone); the pixels are made from the image files each
time a sample is read (`VisionSamples`), as LLaMA-Factory's collator makes them, so memory holds one batch's pixels,
never the dataset's.
An image that went missing or broke since the check costs its row, named like any row problem.
"""

from __future__ import annotations

from typing import Any

from core.data.dataset import TokenizedData
from core.data.formats import Conversation, RowError, RowProblem
from core.data.images import open_images
from core.data.multimodal import IGNORE_INDEX, VisionEncoder
from core.errors import DataError
from core.i18n import message

TOKEN_KEYS = ("input_ids", "labels", "attention_mask", "mm_token_type_ids")


class VisionSamples:
    """Samples as the Trainer reads them (a sized, indexable dataset): token lists kept, pixels made on read."""

    def __init__(self, encoder: VisionEncoder, tokens: list[dict[str, list[int]]], images: list[list[str]], base_dir):
        self.encoder = encoder
        self.tokens = tokens
        self.images = images  # each sample's image references, in order
        self.base_dir = base_dir

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = dict(self.tokens[index])
        references = self.images[index]
        if references:
            pictures = open_images(Conversation([], images=references), self.base_dir)
            features = self.encoder.image_processor(images=pictures, return_tensors="pt")
            sample["pixel_values"] = features["pixel_values"]
            sample["image_grid_thw"] = features["image_grid_thw"]
        return sample

    def select(self, positions: list[int]) -> VisionSamples:
        return VisionSamples(
            self.encoder, [self.tokens[p] for p in positions], [self.images[p] for p in positions], self.base_dir
        )


def cut(sample: dict[str, Any], cutoff_len: int) -> tuple[dict[str, list[int]] | None, bool, str]:
    """(the sample cut at cutoff_len, whether it was cut, why it was refused: "" or a row problem's code). An image's
    tokens are never cut: the model needs all of them (its grid says how many), so a cut through one refuses the row."""
    kept = {key: sample[key] for key in TOKEN_KEYS}
    truncated = len(kept["input_ids"]) > cutoff_len
    if truncated:
        if any(kept["mm_token_type_ids"][cutoff_len:]):
            return None, True, "row.image_beyond_cutoff"
        kept = {key: values[:cutoff_len] for key, values in kept.items()}
    if all(label == IGNORE_INDEX for label in kept["labels"]):
        return None, truncated, "row.answer_beyond_cutoff"
    return kept, truncated, ""


def tokenize_vision_dataset(
    name_or_path: str,
    tokenizer,
    image_processor,
    cutoff_len: int,
    fmt: str = "auto",
    val_size: float = 0.0,
    max_samples: int = 0,
    seed: int = 42,
    columns: str = "",
    template_kwargs: dict[str, Any] | None = None,
) -> TokenizedData:
    """tokenize_dataset's counterpart for a GLM-V model: samples with images, the same split draw and held-out rows,
    row problems numbered by the file's rows."""
    from core.data import prepare

    checked = prepare.check(name_or_path, fmt, columns)
    encoder = VisionEncoder(tokenizer, image_processor, template_kwargs)
    base_dir = checked.path.parent
    count = checked.usable_count if not max_samples else min(max_samples, checked.usable_count)
    problems = list(checked.problems())
    tokens: list[dict[str, list[int]]] = []
    images: list[list[str]] = []
    kept_rows: list[int] = []  # usable-row positions that made a sample
    truncated = 0
    for position, conversation in enumerate(checked.conversations(range(count))):
        row = int(checked.usable[position]) + 1
        try:
            sample, was_cut, refused = cut(encoder.encode(conversation, base_dir, pixels=False), cutoff_len)
        except RowError as exc:  # an image changed since the check, or the template refuses the row
            problems.append(RowProblem(row, exc.message))
            continue
        truncated += was_cut
        if sample is None:
            problems.append(RowProblem(row, message(refused, cutoff_len=cutoff_len)))
            continue
        tokens.append(sample)
        images.append(list(conversation.images or ()))
        kept_rows.append(position)
    if not tokens:
        raise DataError("data.all_beyond_cutoff", checked.path, cutoff_len=cutoff_len)
    problems.sort(key=lambda problem: problem.row)
    samples = VisionSamples(encoder, tokens, images, base_dir)
    held = prepare.held_out_positions(len(samples), val_size, seed, checked.path)
    eval_samples: Any = []
    held_out: list[Conversation] = []
    if held:
        chosen = set(held)
        eval_samples = samples.select(held)
        samples = samples.select([p for p in range(len(samples)) if p not in chosen])
        held_out = checked.conversations([kept_rows[p] for p in held])
    return TokenizedData(samples, eval_samples, checked.format, problems, truncated, held_out=held_out)

"""Data tab handlers: the preview, the upload check, the rendered sample and the length histogram, as plain
functions of the page's values that return (or stream) the updates. Each goes through
`webui.context.handler`; data_layout.py wires them."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core.errors import UnknownColumnsError
from webui.charts import length_histogram
from webui.context import UIContext, handler
from webui.formatting import TEXT_CHARS, clip_cell, column_widths

PAGE_SIZE = 20


def _cell(value: Any, more: str) -> str:
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    return "" if value is None else clip_cell(str(value), more)


def page_table(rows: list[dict[str, Any]], more: str = "… (+{count})") -> pd.DataFrame:
    """One page of rows as a table: the columns of these rows, in the order they first appear; a very long cell
    clipped (`more` says how much was left out)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return pd.DataFrame([[_cell(row.get(c), more) for c in columns] for row in rows], columns=columns)


def shown_table(frame: pd.DataFrame) -> dict:
    """A table update whose columns share the width by what they hold (webui/formatting.py)."""
    return gr.update(value=frame, column_widths=column_widths(frame) if len(frame.columns) else None)


def dataset_options(ctx: UIContext) -> list[tuple[str, str]]:
    """(shown name, value) pairs: uploads by file name, not by their path on the server; the chat's feedback
    datasets with how many pairs / written answers they hold."""
    counted: dict[str, tuple[str, int]] = {}
    for found in ctx.wb.feedback_datasets():
        counted[found["path"]] = ("feedback_pairs_choice", found["pairs"])
        if found["sft_path"]:
            counted[found["sft_path"]] = ("feedback_sft_choice", found["sft_rows"])
    options = []
    for name, value in ctx.wb.dataset_choices():
        if value in counted:
            key, count = counted[value]
            name = ctx.t(key, name=name, count=count)
        options.append((name, value))
    return options


def uploaded_by_gradio(path: str) -> bool:
    """Whether `path` is a file gradio wrote into its upload folder. The upload event's FileData can name any
    path; gradio checks that only under its own launch(), which this server does not use."""
    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()).resolve()
    try:
        return Path(path).resolve().is_relative_to(folder) and Path(path).is_file()
    except (OSError, ValueError):
        return False


@handler(lambda ctx, reason, *_: ("", f"<div class='gw-error'>{html.escape(reason)}</div>"))
def render(ctx: UIContext, name: str, format_name: str, model: str, template: str, number: float, mapping: str = ""):
    """The sample in the chat template, loss-bearing text highlighted."""
    t = ctx.t
    used, pieces = ctx.wb.render_sample(name, format_name, model, template, int(number or 1) - 1, columns=mapping)
    spans, room = [], TEXT_CHARS  # a 1M-token row shows its start, not megabytes of page
    for text, trains in pieces:
        shown = text[:room]
        spans.append(f"<span class='{'gw-loss' if trains else 'gw-prompt'}'>{html.escape(shown)}</span>")
        room -= len(shown)
        if room <= 0:
            left = sum(len(piece) for piece, _ in pieces) - TEXT_CHARS
            spans.append(html.escape(t("cell_clipped", count=f"{left:,}")))
            break
    spans = "".join(spans)
    pictures = ctx.wb.sample_images(name, format_name, model, int(number or 1) - 1, columns=mapping)
    return t("sample_legend", template=used), images_html(t, pictures) + f"<pre class='gw-sample'>{spans}</pre>"


def images_html(t, pictures) -> str:
    """The sample's images as thumbnails, each captioned with its size and the image tokens it costs."""
    if not pictures:
        return ""
    figures = []
    for number, picture in enumerate(pictures, 1):
        source = "data:image/png;base64," + base64.b64encode(picture.thumbnail).decode()
        caption = t(
            "sample_image_caption" if picture.tokens else "sample_image_caption_text_model",
            number=number,
            size="×".join(map(str, picture.size)),
            resized="×".join(map(str, picture.resized)),
            tokens=picture.tokens,
        )
        figures.append(
            f"<figure class='gw-sample-image'><img src='{source}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return f"<div class='gw-sample-images'>{''.join(figures)}</div>"


@handler(lambda ctx, reason, *_: (ctx.error_line(reason), pd.DataFrame(), gr.update()))
def preview(ctx: UIContext, name: str, format_name: str, page_number: float, mapping: str = ""):
    """The summary and a page of rows. A large file shows its first rows at once, straight from the file, and
    the summary once every row is checked (the next time, both come from the data cache)."""
    t = ctx.t
    page_number = max(int(page_number or 1), 1)
    more = t.strings["cell_clipped"]  # filled in per cell by clip_cell
    peek = ctx.wb.peek_dataset(name, format_name, mapping, page_number * PAGE_SIZE)
    if peek is not None:
        text = t("data_checking", path=Path(name).name, format=peek.format or "?") + f" · {page_number}"
        yield text, shown_table(page_table(peek.rows[(page_number - 1) * PAGE_SIZE :], more)), page_number
    checked = ctx.wb.preview_dataset(name, format_name, mapping)
    pages = max(1, math.ceil(checked.row_count / PAGE_SIZE))
    page_number = min(page_number, pages)
    text = (
        t(
            "data_summary",
            path=Path(name).name,
            format=checked.format,
            rows=checked.row_count,
            usable=checked.usable_count,
        )
        + f" · {page_number}/{pages}"
    )
    if checked.problem_count:
        text += (
            "\n\n"
            + t("data_problems", count=checked.problem_count)
            + "\n"
            + "\n".join(f"- {t.message(p)}" for p in checked.problems(20))
        )
    yield text, shown_table(page_table(checked.page(page_number, PAGE_SIZE), more)), page_number


def _upload_failed(ctx: UIContext, reason: str, file_path=None, format_name="", mapping="", current=""):
    """A file that cannot be used never becomes the selected dataset: the page stays on the one shown before."""
    kept = ctx.t("data_upload_kept", dataset=Path(current or "identity").name)
    return gr.skip(), f"{ctx.error_line(reason)}\n\n{kept}", gr.skip(), gr.skip(), None


@handler(_upload_failed)
def on_upload(ctx: UIContext, file_path: str | None, format_name: str, mapping: str = "", current: str = ""):
    """Check the file where it was uploaded; keep it in the workspace (and select it) only if it can be used,
    or if only its column names need mapping. A file that cannot be used changes nothing on the page: the
    table, sample and histogram stay on the dataset shown before, and the message says so."""
    t = ctx.t
    if not file_path:
        yield gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        return
    kept = t("data_upload_kept", dataset=Path(current or "identity").name)
    if not uploaded_by_gradio(file_path):  # a file path sent as if uploaded: never read, never copied
        yield gr.skip(), f"**{t('error')}:** {t('data_not_uploaded')}\n\n{kept}", gr.skip(), gr.skip(), None
        return
    try:
        if file_path.lower().endswith(".zip"):  # a data file with its images: unpacked, checked, then kept
            saved = ctx.wb.add_zip_upload(file_path, format_name, mapping)
        else:
            ctx.wb.preview_upload(file_path, format_name, mapping)
            saved = ctx.wb.add_upload(file_path)
    except UnknownColumnsError as exc:
        # The rows read fine but their columns need a mapping: typed in above, the file uploaded again.
        hint = f"{ctx.error(exc)}\n\n{t('data_unknown_columns_hint')}\n\n{kept}"
        yield gr.skip(), hint, gr.skip(), gr.skip(), None
        return
    for shown in preview(ctx, saved, format_name, 1, mapping):
        yield gr.update(choices=dataset_options(ctx), value=saved), *shown, None


# No histogram rather than another dataset's: the preview names data problems; a bug is logged by the handler.
@handler(lambda ctx, reason, *_: (None, ""))
def lengths(ctx: UIContext, name: str, format_name: str, model: str, template: str, cutoff_len: float, mapping=""):
    """The histogram, and a line up front when samples lose every answer token to the cutoff."""
    found = ctx.wb.token_lengths(name, format_name, model, template, mapping)
    cutoff = int(cutoff_len or 0)
    return length_histogram(found.lengths, cutoff, ctx.t, total=found.total), cutoff_line(ctx, found, cutoff)


def cutoff_line(ctx: UIContext, found, cutoff: int) -> str:
    t = ctx.t
    measured = len(found.answer_starts)
    kept = found.keeping_answer(cutoff)
    if kept == measured:
        return ""
    if found.sampled:  # a random sample of the samples: scaled to the whole, as the histogram's title does
        kept = round(kept * found.total / max(measured, 1))
    total = found.total
    if kept == 0:
        return t("data_cutoff_none", kept=0, total=total, cutoff=cutoff)
    return t("data_cutoff_some", kept=kept, total=total, cutoff=cutoff, dropped=total - kept)


def refresh(ctx: UIContext, current: str | None):
    options = dataset_options(ctx)
    values = [value for _, value in options]
    return gr.update(choices=options, value=current if current in values else "identity")

"""Data tab: pick a demo dataset or upload a file; see the detected format, row problems and a paged table. This
module lays the tab out and wires its events; what the events do is in data_handlers.py."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from core.data.formats import FORMATS
from core.data.readers import DEMO_DATASETS
from webui.context import UIContext
from webui.tabs import data_handlers as h


def data_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    t = ctx.t
    with gr.Row():
        # The demo sets only: uploads are added when the page opens (nothing of the workspace before login).
        ui.dataset = gr.Dropdown(
            [(name, name) for name in DEMO_DATASETS],
            value="identity",
            label=t.label("dataset"),
            info=t("field_dataset_info"),
            allow_custom_value=True,
            scale=3,
            elem_id="data-dataset",
        )
        ui.fmt = gr.Dropdown(
            ["auto", *FORMATS],
            value="auto",
            label=t.label("dataset_format"),
            info=t("field_dataset_format_info"),
            scale=1,
        )
        ui.page = gr.Number(1, label=t("page_label"), minimum=1, precision=0, scale=1)
    ui.columns = gr.Textbox(
        "",
        label=t.label("columns"),
        info=t("field_columns_info"),
        placeholder="question=instruction, answer=output",
        elem_id="data-columns",
    )
    # No file_types filter: our own check names the file and the supported types in the page, not a toast.
    ui.upload = gr.File(label=t("upload_label"), type="filepath", height=120, elem_id="data-upload")
    ui.summary = gr.Markdown(elem_id="data-summary")
    # Up front, before the table: a dataset whose answers all lie beyond cutoff_len cannot train.
    ui.cutoff_note = gr.Markdown(elem_id="data-cutoff")
    ui.table = gr.Dataframe(interactive=False, wrap=True, max_height=520, elem_id="data-table")
    ui.histogram = gr.Plot(label=t("tokens"), show_label=False, elem_id="data-lengths")
    with gr.Accordion(t("sample_title"), open=True):
        ui.sample_index = gr.Number(1, label=t("sample_index"), minimum=1, precision=0)
        ui.legend = gr.Markdown()
        ui.rendered = gr.HTML(elem_id="data-sample")


def create_data_tab(ctx: UIContext) -> dict[str, gr.components.Component]:
    ui = SimpleNamespace()
    data_layout(ctx, ui)
    # `.input` fires on the user's own changes only, so an upload that selects its file does not preview twice.
    preview_io = dict(
        fn=partial(h.preview, ctx),
        inputs=[ui.dataset, ui.fmt, ui.page, ui.columns],
        outputs=[ui.summary, ui.table, ui.page],
    )
    # Another dataset starts at its first sample and page, with no column mapping meant for the last one.
    ui.dataset.input(lambda: (1, "", 1), None, [ui.sample_index, ui.columns, ui.page], api_name=False).then(
        **preview_io, api_name="preview_dataset"
    )
    ui.fmt.input(**preview_io, api_name=False)
    ui.page.submit(**preview_io, api_name=False)
    ui.columns.submit(**preview_io, api_name=False)
    ui.columns.blur(**preview_io, api_name=False)
    ui.upload.upload(
        partial(h.on_upload, ctx),
        inputs=[ui.upload, ui.fmt, ui.columns, ui.dataset],
        outputs=[ui.dataset, ui.summary, ui.table, ui.page, ui.upload],
        api_name="upload_dataset",
    )
    return {
        "refresh": (partial(h.refresh, ctx), ui.dataset, ui.dataset),
        "dataset": ui.dataset,
        "format": ui.fmt,
        "columns": ui.columns,
        "summary": ui.summary,
        "table": ui.table,
        "preview": preview_io,
        "lengths": partial(h.lengths, ctx),
        "histogram": [ui.histogram, ui.cutoff_note],
        "render": partial(h.render, ctx),
        "sample_index": ui.sample_index,
        "rendered": [ui.legend, ui.rendered],
    }

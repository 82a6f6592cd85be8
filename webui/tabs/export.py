"""Export tab: one click downloads a finished run's adapter (or model) as a zip."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.data.readers import DataError
from core.export import MERGE_DTYPES, ExportError
from webui.context import UIContext


def create_export_tab(ctx: UIContext) -> dict:
    t = ctx.t
    gr.Markdown(t("export_info"))
    with gr.Row():
        # Runs appear while the page is open: accept any name; the workbench checks it is a run of this workspace.
        run = gr.Dropdown(ctx.wb.runs_with_results(), label=t("export_run"), allow_custom_value=True, scale=4, elem_id="export-run")
        refresh = gr.Button(t("refresh"), scale=0, min_width=100)
    download = gr.DownloadButton(t("export_download"), variant="primary", elem_id="export-download")
    notice = gr.Markdown(elem_id="export-notice")
    with gr.Accordion(t("export_merge_title"), open=False):
        with gr.Row():
            merge_dir = gr.Textbox(str(ctx.wb.exports / "merged"), label=t("export_merge_dir"), scale=3)
            merge_dtype = gr.Dropdown(list(MERGE_DTYPES), value="auto", label=t("export_merge_dtype"), scale=1)
            shard_size = gr.Textbox("2GB", label=t("export_merge_shard"), scale=1)
        merge = gr.Button(t("export_merge"))
        merge_notice = gr.Markdown()

    def prepare(name: str | None):
        """Build the zip as soon as a run is chosen, so the button downloads it in one click."""
        if not name:
            return None, ""
        try:
            path = ctx.wb.export_zip(name)
        except (ExportError, DataError, OSError) as exc:
            return None, ctx.error(exc)
        return path, t("export_ready", file=Path(path).name)

    def refresh_runs():
        runs = ctx.wb.runs_with_results()
        return gr.update(choices=runs, value=runs[0] if runs else None), "" if runs else t("export_none")

    def merge_run(name: str | None, folder: str, dtype: str, shard: str):
        try:
            path = ctx.wb.merge_run(name or "", folder, dtype, shard)
        except (ExportError, DataError, OSError, ValueError) as exc:
            return ctx.error(exc)
        return "✅ " + t("export_merged", path=path)

    run.change(prepare, run, [download, notice], api_name="export_zip")
    merge.click(merge_run, [run, merge_dir, merge_dtype, shard_size], merge_notice, api_name="merge_run")
    refresh.click(refresh_runs, None, [run, notice], api_name=False)
    return {"run": run, "refresh": (refresh_runs, None, [run, notice])}

"""Export tab: one click builds a finished run's adapter (or model) zip and downloads it. This module lays the tab
out and wires its events; what the events do is in export_handlers.py."""

from __future__ import annotations

from functools import partial

import gradio as gr

from core.models.loader import DTYPES
from webui.context import UIContext
from webui.tabs import export_handlers as h

# After the zip is built: the hidden DownloadButton holds it; clicking it makes the browser download it.
CLICK_DOWNLOAD = """() => {
  const holder = document.querySelector('#export-file');
  const target = holder && (holder.matches('a,button') ? holder : holder.querySelector('a,button'));
  if (target && !target.hasAttribute('disabled')) target.click();
}"""


def create_export_tab(ctx: UIContext) -> dict:
    t = ctx.t
    gr.Markdown(t("export_info"))
    with gr.Row():
        # Runs appear while the page is open: accept any name; the workbench checks it is a run of this workspace.
        # Filled when the tab opens: nothing of the workspace is in the page before login.
        run = gr.Dropdown([], label=t("export_run"), allow_custom_value=True, scale=4, elem_id="export-run")
        refresh = gr.Button(t("refresh"), scale=0, min_width=100)
    # Reading never writes: choosing a run (which the page does on load) only checks it; the zip is built when
    # the button is clicked, then handed to a hidden DownloadButton that the browser clicks for the download.
    build = gr.Button(t("export_download"), variant="primary", elem_id="export-download")
    download = gr.DownloadButton(visible="hidden", elem_id="export-file")
    notice = gr.Markdown(elem_id="export-notice")
    with gr.Accordion(t("export_merge_title"), open=False):
        with gr.Row():
            merge_dir = gr.Textbox(
                "", label=t("export_merge_dir"), info=t("export_merge_dir_info"), scale=3, elem_id="export-merge-dir"
            )
            merge_dtype = gr.Dropdown(list(DTYPES), value="auto", label=t("export_merge_dtype"), scale=1)
            shard_size = gr.Textbox("2GB", label=t("export_merge_shard"), scale=1)
            overwrite = gr.Checkbox(False, label=t("export_overwrite"), info=t("export_overwrite_info"), scale=1)
        merge = gr.Button(t("export_merge"), elem_id="export-merge")
        merge_notice = gr.Markdown(elem_id="export-merge-notice")
        # Shown once a merge is done: the folder zipped on the click, then downloaded as the adapter zip is.
        merged_folder = gr.State("")
        merged_build = gr.Button(t("export_merged_download"), visible=False, elem_id="export-merged-download")
        merged_file = gr.DownloadButton(visible="hidden", elem_id="export-merged-file")

    run.change(partial(h.chosen, ctx), run, [download, notice], api_name=False)
    build.click(partial(h.prepare, ctx), run, [download, notice], api_name="export_zip").then(
        None, None, None, js=CLICK_DOWNLOAD, api_name=False
    )
    merge.click(
        partial(h.merge_run, ctx),
        [run, merge_dir, merge_dtype, shard_size, overwrite],
        [merge_notice, merged_folder, merged_build],
        api_name="merge_run",
    )
    merged_build.click(
        partial(h.zip_merged, ctx), merged_folder, [merged_file, merge_notice], api_name="merged_zip"
    ).then(None, None, None, js=CLICK_DOWNLOAD.replace("#export-file", "#export-merged-file"), api_name=False)
    refresh_runs = partial(h.refresh_runs, ctx)
    refresh.click(refresh_runs, [merge_dir, run], [run, notice, merge_dir], api_name=False)
    return {"run": run, "refresh": (refresh_runs, [merge_dir, run], [run, notice, merge_dir])}

"""Export tab handlers: checking a run, building its zip, merging and zipping the merged model, as plain
functions of the page's values that return the updates. Each goes through `webui.context.handler`;
export_layout.py wires them."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webui.context import UIContext, handler


def _failed(ctx: UIContext, reason: str, *_):
    """No file to download; the notice says why."""
    return None, ctx.error_line(reason)


@handler(_failed)
def chosen(ctx: UIContext, name: str | None):
    """A run chosen (by the user, or by the page as it opens): checked, nothing written."""
    if not name:
        return None, ""
    path = ctx.wb.run_path(name)
    return None, ctx.t("export_will_build", file=f"{path.name}.zip")


@handler(_failed)
def prepare(ctx: UIContext, name: str | None):
    """The click: build the zip now; the browser then downloads it."""
    if not name:
        return None, ctx.t("export_choose_run")
    path = ctx.wb.export_zip(name)
    return path, ctx.t("export_ready", file=Path(path).name)


def refresh_runs(ctx: UIContext, folder: str, current: str | None):
    """Lists read afresh. The chosen run stays chosen (and its zip's notice stays) while it exists."""
    runs = ctx.wb.runs_with_results()
    suggestion = folder or str(ctx.wb.exports / "merged")
    if not runs:
        return gr.update(choices=[], value=None), ctx.t("export_empty"), suggestion
    return gr.update(choices=runs, value=current if current in runs else runs[0]), gr.skip(), suggestion


@handler(lambda ctx, reason, *_: (ctx.error_line(reason), "", gr.update(visible=False)))
def merge_run(ctx: UIContext, name: str | None, folder: str, dtype: str, shard: str, replace: bool):
    path = ctx.wb.merge_run(name or "", folder, dtype, shard, overwrite=bool(replace))
    return ctx.t("export_merged", path=path), path, gr.update(visible=True)


@handler(_failed)
def zip_merged(ctx: UIContext, folder: str):
    path = ctx.wb.merged_zip(folder)
    return path, ctx.t("export_ready", file=Path(path).name)

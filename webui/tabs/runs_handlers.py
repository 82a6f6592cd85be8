"""Runs tab handlers: the table, the overlaid loss curves and deleting a run, as plain functions of the page's
values that return the updates. Each goes through `webui.context.handler`; runs_layout.py wires them."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from webui.charts import overlay_figure
from webui.context import UIContext, handler
from webui.formatting import column_widths, format_duration, format_loss

COLUMNS = (
    "run",
    "state",
    "method",
    "stage",
    "model",
    "dataset",
    "steps",
    "final_loss",
    "best_eval_loss",
    "duration",
    "error",
)


def runs_frame(ctx: UIContext) -> pd.DataFrame:
    """The runs table in the page's language: translated headers and states (method names stay config keys)."""
    t = ctx.t
    rows = [
        {
            "run": row["run"],
            "state": t.state(row["state"]),
            "method": row["method"],
            "stage": row["stage"],
            "model": row["model"],
            "dataset": row["dataset"],
            "steps": f"{row['step']}/{row['max_steps']}",
            "final_loss": format_loss(row["final_loss"]),
            "best_eval_loss": format_loss(row["best_eval_loss"]),
            "duration": format_duration(row["seconds"]),
            "error": ctx.status_error(row) if row["error"] else "",
        }
        for row in ctx.wb.runs_table()
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.rename(columns={c: t.get(f"runs_col_{c}", c) for c in frame.columns})


def _compare_failed(ctx: UIContext, reason: str, *_):
    """A run deleted meanwhile, say: a toast, the chart left as it was."""
    gr.Warning(reason)
    return gr.skip()


@handler(_compare_failed)
def compare(ctx: UIContext, chosen: list[str]):
    return overlay_figure(ctx.wb.run_metrics(chosen or []), ctx.t)


def shown_runs(ctx: UIContext):
    frame = runs_frame(ctx)
    return gr.update(value=frame, column_widths=column_widths(frame))


def refresh(ctx: UIContext, chosen: list[str] | None = None, one: str | None = None):
    """The table and lists read afresh; what the user chose stays chosen while it exists (a list refreshed
    because another run started must not undo their choice)."""
    current = [run.name for run in ctx.wb.runs()]
    kept = [name for name in chosen or [] if name in current]
    return (
        shown_runs(ctx),
        gr.update(choices=current, value=kept or current[:2]),
        gr.update(choices=current, value=one if one in current else (current[0] if current else None)),
        gr.update(visible=False),
        gr.update(visible=not current),
        gr.update(visible=bool(current)),
    )


def ask(ctx: UIContext, name: str):
    if not name:
        return gr.update(visible=False), ""
    return gr.update(visible=True), ctx.t("runs_delete_ask", run=name)


@handler(lambda ctx, reason, name, chosen: (*refresh(ctx, chosen, name), ctx.error_line(reason)))
def remove(ctx: UIContext, name: str, chosen: list[str]):
    ctx.wb.delete_run(name)
    return (*refresh(ctx, chosen), ctx.t("runs_deleted", run=name))

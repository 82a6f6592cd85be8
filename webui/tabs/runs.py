"""Runs tab: every run with its state and results; overlay several runs' loss curves; delete with confirmation."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from webui.charts import overlay_figure
from webui.context import UIContext
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


def create_runs_tab(ctx: UIContext) -> dict:
    t = ctx.t
    refresh_button = gr.Button(t("refresh"), size="sm")
    empty = gr.Markdown(t("runs_empty"), elem_id="runs-empty")
    # Filled from the workspace when the tab opens: nothing of it is in the page before login.
    with gr.Column(visible=False) as listing:  # shown once there is a run to list
        table = gr.Dataframe(
            pd.DataFrame(columns=[t.get(f"runs_col_{c}", c) for c in COLUMNS]),
            interactive=False,
            wrap=True,
            max_height=360,
            elem_id="runs-table",
        )
        selected = gr.CheckboxGroup([], value=[], label=t("runs_select"))
        chart = gr.Plot(label=t("runs_compare"), show_label=False)
        with gr.Row():
            victim = gr.Dropdown(
                [], value=None, label=t("runs_one"), allow_custom_value=True, scale=3, elem_id="runs-one"
            )
            open_chat = gr.Button(t("runs_open_chat"), scale=1, elem_id="runs-open-chat")
            open_eval = gr.Button(t("runs_open_eval"), scale=1, elem_id="runs-open-eval")
            delete = gr.Button(t("runs_delete"), variant="stop", scale=1)
            confirm = gr.Button(t("runs_delete_confirm"), variant="stop", visible=False, scale=1)
    notice = gr.Markdown()

    def compare(chosen: list[str]):
        try:
            return overlay_figure(ctx.wb.run_metrics(chosen or []), t)
        except Exception as exc:  # noqa: BLE001 - a run deleted meanwhile, say
            gr.Warning(t.message(exc))
            return gr.skip()

    def shown_runs():
        frame = runs_frame(ctx)
        return gr.update(value=frame, column_widths=column_widths(frame))

    def refresh(chosen: list[str] | None = None, one: str | None = None):
        """The table and lists read afresh; what the user chose stays chosen while it exists (a list refreshed
        because another run started must not undo their choice)."""
        current = [run.name for run in ctx.wb.runs()]
        kept = [name for name in chosen or [] if name in current]
        return (
            shown_runs(),
            gr.update(choices=current, value=kept or current[:2]),
            gr.update(choices=current, value=one if one in current else (current[0] if current else None)),
            gr.update(visible=False),
            gr.update(visible=not current),
            gr.update(visible=bool(current)),
        )

    def ask(name: str):
        if not name:
            return gr.update(visible=False), ""
        return gr.update(visible=True), t("runs_delete_ask", run=name)

    def remove(name: str, chosen: list[str]):
        try:
            ctx.wb.delete_run(name)
        except Exception as exc:  # noqa: BLE001
            return (*refresh(chosen, name), ctx.error(exc))
        return (*refresh(chosen), t("runs_deleted", run=name))

    listed = [table, selected, victim, confirm, empty, listing]
    refresh_button.click(refresh, [selected, victim], listed, api_name="refresh_runs")
    selected.change(compare, selected, chart, api_name="compare_runs")
    delete.click(ask, victim, [confirm, notice], api_name=False)
    confirm.click(remove, [victim, selected], [*listed, notice], api_name="delete_run")
    return {
        "refresh": (refresh, [selected, victim], listed),
        "run": victim,
        "open_chat": open_chat,
        "open_eval": open_eval,
        "compare": (compare, selected, chart),
    }

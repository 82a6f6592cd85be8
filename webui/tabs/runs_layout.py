"""Runs tab: every run with its state and results; overlay several runs' loss curves; delete with confirmation.
This module lays the tab out and wires its events; what the events do is in runs_handlers.py."""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd

from webui.context import UIContext
from webui.tabs import runs_handlers as h
from webui.tabs.runs_handlers import COLUMNS


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

    listed = [table, selected, victim, confirm, empty, listing]
    refresh, compare = partial(h.refresh, ctx), partial(h.compare, ctx)
    refresh_button.click(refresh, [selected, victim], listed, api_name="refresh_runs")
    selected.change(compare, selected, chart, api_name="compare_runs")
    delete.click(partial(h.ask, ctx), victim, [confirm, notice], api_name=False)
    confirm.click(partial(h.remove, ctx), [victim, selected], [*listed, notice], api_name="delete_run")
    return {
        "refresh": (refresh, [selected, victim], listed),
        "run": victim,
        "open_chat": open_chat,
        "open_eval": open_eval,
        "compare": (compare, selected, chart),
    }

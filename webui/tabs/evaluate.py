"""Evaluate tab: a run and a dataset -> loss, perplexity, BLEU-4 and ROUGE, and every prediction."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from core.evaluation.evaluate import EvalSettings
from webui.context import UIContext


def create_evaluate_tab(ctx: UIContext) -> dict:
    t = ctx.t
    gr.Markdown(t("eval_info"))
    with gr.Row():
        # Runs and uploads are listed when the tab opens: nothing of the workspace is in the page before login.
        run = gr.Dropdown([], value=None, label=t("eval_run"), allow_custom_value=True, scale=3)
        dataset = gr.Dropdown(
            [("identity", "identity")], value="identity", label=t("eval_data_label"), allow_custom_value=True, scale=3
        )
        max_samples = gr.Number(20, label=t("eval_max_samples"), precision=0, minimum=0, scale=1)
    with gr.Row():
        max_new_tokens = gr.Slider(8, 1024, 128, step=8, label=t("max_new_tokens"))
        greedy = gr.Checkbox(True, label=t("greedy"))
        temperature = gr.Slider(0.05, 2, 0.7, step=0.05, label=t("temperature"))
    with gr.Row():
        start = gr.Button(t("eval_start"), variant="primary")
        abort = gr.Button(t("eval_abort"), variant="stop")
    notice = gr.Markdown()
    metrics = gr.Dataframe(label=t("eval_metrics"), interactive=False)
    predictions = gr.Dataframe(label=t("eval_predictions"), interactive=False, wrap=True, max_height=480)

    def evaluate(run_name, dataset_name, samples, new_tokens, greedy_, temperature_):
        settings = EvalSettings(
            max_samples=int(samples or 0),
            max_new_tokens=int(new_tokens),
            greedy=bool(greedy_),
            temperature=float(temperature_),
        )
        try:
            result = ctx.wb.evaluate(run_name or "", dataset_name, settings=settings)
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            return ctx.error(exc), pd.DataFrame(), pd.DataFrame()
        shown = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        note = (
            t("eval_stopped", done=result.metrics["samples"], total=result.metrics["planned"])
            if result.metrics.get("stopped_early")
            else ""
        )
        return note, pd.DataFrame([shown]), pd.DataFrame(result.predictions)

    def abort_evaluation():
        return t("eval_aborting") if ctx.wb.abort_evaluation() else t("eval_nothing_running")

    def refresh(current: str | None):
        runs = ctx.wb.runs_with_results()
        return (
            gr.update(choices=runs, value=current if current in runs else (runs[0] if runs else None)),
            gr.update(choices=ctx.wb.dataset_choices()),
        )

    start.click(
        evaluate,
        [run, dataset, max_samples, max_new_tokens, greedy, temperature],
        [notice, metrics, predictions],
        api_name="evaluate",
    )
    abort.click(abort_evaluation, None, notice, api_name="abort_evaluation")
    return {"refresh": (refresh, run, [run, dataset]), "run": run}

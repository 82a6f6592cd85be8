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
        max_samples = gr.Number(
            20, label=t("eval_max_samples"), precision=0, minimum=0, scale=1, elem_id="eval-samples"
        )
    with gr.Row():
        max_new_tokens = gr.Slider(8, 1024, 128, step=8, label=t("max_new_tokens"))
        greedy = gr.Checkbox(True, label=t("greedy"))
        temperature = gr.Slider(0.05, 2, 0.7, step=0.05, label=t("temperature"))
    with gr.Row():
        start = gr.Button(t("eval_start"), variant="primary", elem_id="eval-start")
        abort = gr.Button(t("eval_abort"), variant="stop", interactive=False, elem_id="eval-abort")
    notice = gr.Markdown(elem_id="eval-notice")
    with gr.Column(visible=False) as results:  # shown once an evaluation has results
        metrics = gr.Dataframe(label=t("eval_metrics"), interactive=False, elem_id="eval-metrics")
        predictions = gr.Dataframe(
            label=t("eval_predictions"),
            interactive=False,
            wrap=True,
            max_height=480,
            column_widths=["30%", "30%", "40%"],
            elem_id="eval-predictions",
        )

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
            return ctx.error(exc), gr.skip(), gr.skip(), gr.update(visible=False)
        shown = {
            t.get(f"metric_{key}", key): value
            for key, value in result.metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        note = (
            t("eval_stopped", done=result.metrics["samples"], total=result.metrics["planned"])
            if result.metrics.get("stopped_early")
            else ""
        )
        rows = pd.DataFrame(result.predictions, columns=["prompt", "label", "prediction"])
        rows = rows.rename(columns={c: t(f"eval_col_{c}") for c in rows.columns})
        return note, pd.DataFrame([shown]), rows, gr.update(visible=True)

    def abort_evaluation():
        return t("eval_aborting") if ctx.wb.abort_evaluation() else t("eval_nothing_running")

    def refresh(current: str | None, shown: str):
        """Lists read afresh; with nothing to evaluate, say what to do instead of an empty table."""
        runs = ctx.wb.runs_with_results()
        hint = t("eval_empty")
        note = hint if not runs else ("" if shown == hint else gr.skip())
        return (
            gr.update(choices=runs, value=current if current in runs else (runs[0] if runs else None)),
            gr.update(choices=ctx.wb.dataset_choices()),
            note,
        )

    def busy(running: bool):
        """While an evaluation runs, Abort can act and Start waits; otherwise the other way round."""
        return gr.update(interactive=not running), gr.update(interactive=running)

    start.click(lambda: busy(True), None, [start, abort], api_name=False).then(
        evaluate,
        [run, dataset, max_samples, max_new_tokens, greedy, temperature],
        [notice, metrics, predictions, results],
        api_name="evaluate",
    ).then(lambda: busy(False), None, [start, abort], api_name=False)
    abort.click(abort_evaluation, None, notice, api_name="abort_evaluation")
    return {"refresh": (refresh, [run, notice], [run, dataset, notice]), "run": run}

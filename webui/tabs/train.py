"""Train tab: the form for one run, Start/Abort, and a live view (progress, loss chart, log) of the job.

The live view is driven by a timer that reads the run folder, so it shows the same thing after a page
refresh, in a second browser tab, or after the browser was closed while training went on.
"""

from __future__ import annotations

import html

import gradio as gr

from core.config import ConfigError, RunConfig
from core.data.readers import DataError
from core.training.job import BusyError
from core.workbench import format_duration
from webui.charts import loss_figure
from webui.context import UIContext

POLL_SECONDS = 1.0
# The form's defaults suit the tiny demo model: it learns the identity set in well under a minute.
DEMO_DEFAULTS = RunConfig(learning_rate=2e-3, num_train_epochs=10, cutoff_len=512)


def progress_html(snapshot, t) -> str:
    if snapshot is None:
        return f"<div class='gw-progress-text'>{html.escape(t('progress_none'))}</div>"
    status = snapshot.status
    step, total = int(status.get("step") or 0), int(status.get("max_steps") or 0)
    percent = int(100 * step / total) if total else 0
    state = snapshot.state
    eta = status.get("eta") if state == "running" else 0
    text = t("progress_text", run=snapshot.name, state=t(f"state_{state}") if f"state_{state}" in t.strings else state,
             step=step, total=total or "?", percent=percent, elapsed=format_duration(status.get("elapsed")),
             eta=format_duration(eta))
    error = f"<div class='gw-error'>❌ {html.escape(status['error'])}</div>" if status.get("error") else ""
    return (f"<div class='gw-progress'><div class='gw-bar gw-{state}' style='width:{percent}%'></div></div>"
            f"<div class='gw-progress-text'>{html.escape(text)}</div>{error}")


def create_train_tab(ctx: UIContext, data: dict) -> dict:
    t, d = ctx.t, DEMO_DEFAULTS
    dataset_note = gr.Markdown(t("train_dataset", dataset=d.dataset, format="auto"))
    with gr.Row():
        model = gr.Textbox(d.model_name_or_path, label=t("model_label"), info=t("model_info"), scale=3)
        method = gr.Radio([(t("method_lora"), "lora"), (t("method_full"), "full")], value=d.finetuning_type,
                          label=t("method_label"), scale=2)
    with gr.Row(visible=d.finetuning_type == "lora") as lora_group:
        lora_rank = gr.Number(d.lora_rank, label=t("lora_rank"), precision=0, minimum=1)
        lora_alpha = gr.Number(d.lora_alpha, label=t("lora_alpha"), precision=0, minimum=1)
        lora_dropout = gr.Number(d.lora_dropout, label=t("lora_dropout"), minimum=0, maximum=0.9)
        lora_target = gr.Textbox(d.lora_target, label=t("lora_target"), info=t("lora_target_info"))
    with gr.Row():
        learning_rate = gr.Number(d.learning_rate, label=t("learning_rate"), info=t("learning_rate_info"))
        epochs = gr.Number(d.num_train_epochs, label=t("epochs"), minimum=0)
        max_steps = gr.Number(d.max_steps, label=t("max_steps"), info=t("max_steps_info"), precision=0)
    with gr.Row():
        batch_size = gr.Number(d.per_device_train_batch_size, label=t("batch_size"), precision=0, minimum=1)
        grad_accum = gr.Number(d.gradient_accumulation_steps, label=t("grad_accum"), precision=0, minimum=1)
        cutoff_len = gr.Number(d.cutoff_len, label=t("cutoff_len"), precision=0, minimum=8)
    with gr.Row():
        start = gr.Button(t("start"), variant="primary")
        abort = gr.Button(t("abort"), variant="stop")
    message = gr.Markdown()
    progress = gr.HTML(progress_html(None, t))
    chart = gr.Plot(loss_figure([], t), label=t("chart_loss"))
    with gr.Accordion(t("log_label"), open=False):
        log = gr.Textbox(lines=12, max_lines=12, show_label=False, autoscroll=True)
    with gr.Accordion(t("status_label"), open=False):
        status_json = gr.JSON()
    seen = gr.State(("", -1, ""))  # (run, metrics count, state) already drawn: skip redrawing an unchanged chart
    timer = gr.Timer(POLL_SECONDS)

    form = [model, method, lora_rank, lora_alpha, lora_dropout, lora_target, learning_rate, epochs, max_steps,
            batch_size, grad_accum, cutoff_len, data["dataset"], data["format"]]

    def start_training(model_, method_, rank, alpha, dropout, target, lr, epochs_, steps, batch, accum, cutoff,
                       dataset, fmt):
        try:
            config = DEMO_DEFAULTS.replace(
                model_name_or_path=model_, finetuning_type=method_, lora_rank=rank, lora_alpha=alpha,
                lora_dropout=dropout, lora_target=target, learning_rate=lr, num_train_epochs=epochs_,
                max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                cutoff_len=cutoff, dataset=dataset, dataset_format=fmt)
            run = ctx.wb.start_training(config.validate())
        except (ConfigError, DataError, BusyError) as exc:
            return ctx.error(exc)
        return "✅ " + t("started", run=run)

    def abort_training():
        running = ctx.wb.jobs.running_run
        if running is None or not ctx.wb.abort_training():
            return t("nothing_running")
        return "⏹ " + t("aborting", run=running.name)

    def poll(drawn):
        snapshot = ctx.wb.snapshot(ctx.wb.current_run_name())
        if snapshot is None:
            return progress_html(None, t), gr.skip(), gr.skip(), {}, drawn
        key = (snapshot.name, len(snapshot.metrics), snapshot.state)
        figure = gr.skip() if key == tuple(drawn) else loss_figure(snapshot.metrics, t)
        return progress_html(snapshot, t), figure, snapshot.log_tail, snapshot.status, key

    def dataset_changed(dataset, fmt):
        return t("train_dataset", dataset=dataset, format=fmt)

    method.change(lambda m: gr.update(visible=m == "lora"), method, lora_group, api_name=False)
    start.click(start_training, form, message, api_name="start_training")
    abort.click(abort_training, None, message, api_name="abort_training")
    timer.tick(poll, seen, [progress, chart, log, status_json, seen], api_name="poll", show_progress="hidden")
    for component in (data["dataset"], data["format"]):
        component.change(dataset_changed, [data["dataset"], data["format"]], dataset_note, api_name=False)
    return {"start": start, "abort": abort, "message": message, "status": status_json}

"""Train tab: the form for one run, Start/Abort, and a live view (progress, loss chart, log) of the job.

Every form field is named after its RunConfig key, so the form, the YAML file and the CLI stay one thing. The
fields carry no min/max of their own: RunConfig validation names the key and the bad value, in the page's language.
The live view is driven by a timer that reads the run folder, so it shows the same thing after a page
refresh, in a second browser tab, or after the browser was closed while training went on.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from core.config import (COMPUTE_DTYPES, DISTILL_MODES, FINETUNING_TYPES, LR_SCHEDULERS, PRECISIONS,
                         QUANTIZATION_TYPES, ConfigError, RunConfig, command_line, load_yaml_with_notes)
from core.data.readers import DataError
from core.data.template import TEMPLATES
from core.models.loader import ModelError
from core.training.job import BusyError
from core.workbench import format_duration
from webui.charts import loss_figure
from webui.context import UIContext

POLL_SECONDS = 1.0
# The form's defaults suit the tiny demo model: it learns the identity set in well under a minute.
DEMO_DEFAULTS = RunConfig(learning_rate=2e-3, num_train_epochs=10, cutoff_len=512, prefix_projection=True)
# Suggested learning rates: the random demo model needs large steps; real models small ones.
SUGGESTED_LR = {
    "demo": {"lora": 2e-3, "qlora": 2e-3, "freeze": 1e-3, "full": 1e-3, "ptuning_v2": 1e-2, "distill": 1e-3},
    "real": {"lora": 2e-4, "qlora": 2e-4, "freeze": 5e-5, "full": 1e-5, "ptuning_v2": 2e-2, "distill": 5e-5},
}
LORA_METHODS = ("lora", "qlora")


def suggested_learning_rate(model: str, method: str) -> float:
    return SUGGESTED_LR["demo" if model.strip() in ("", "demo") else "real"].get(method, 2e-4)


def progress_html(snapshot, t) -> str:
    if snapshot is None:
        return f"<div class='gw-progress-text'>{html.escape(t('progress_none'))}</div>"
    status = snapshot.status
    step, total = int(status.get("step") or 0), int(status.get("max_steps") or 0)
    percent = int(100 * step / total) if total else 0
    state = snapshot.state
    eta = status.get("eta") if state == "running" else 0
    text = t("progress_text", run=snapshot.name, state=t.get(f"state_{state}", state),
             step=step, total=total or "?", percent=percent, elapsed=format_duration(status.get("elapsed")),
             eta=format_duration(eta))
    error = f"<div class='gw-error'>❌ {html.escape(t.message(status['error']))}</div>" if status.get("error") else ""
    return (f"<div class='gw-progress'><div class='gw-bar gw-{state}' style='width:{percent}%'></div></div>"
            f"<div class='gw-progress-text'>{html.escape(text)}</div>{error}")


def _finished_runs(ctx: UIContext) -> list[str]:
    return [run.name for run in ctx.wb.runs() if run.state == "finished"]


def create_method_fields(t, d: RunConfig) -> tuple[dict, dict]:
    """The method choice and each method's own fields; returns (fields by config key, groups by method)."""
    fields: dict[str, gr.components.Component] = {}
    with gr.Group(visible=d.finetuning_type in LORA_METHODS) as lora_group:
        with gr.Row():
            fields["lora_rank"] = gr.Number(d.lora_rank, label=t("lora_rank"), precision=0)
            fields["lora_alpha"] = gr.Number(d.lora_alpha, label=t("lora_alpha"), precision=0)
            fields["lora_dropout"] = gr.Number(d.lora_dropout, label=t("lora_dropout"))
            fields["lora_target"] = gr.Textbox(d.lora_target, label=t("lora_target"), info=t("lora_target_info"))
            fields["use_dora"] = gr.Checkbox(d.use_dora, label=t("use_dora"))
            fields["use_rslora"] = gr.Checkbox(d.use_rslora, label=t("use_rslora"))
    with gr.Group(visible=d.finetuning_type == "qlora") as quant_group:
        with gr.Row():
            fields["quantization_bit"] = gr.Radio([4, 8], value=d.quantization_bit, label=t("quantization_bit"))
            fields["quantization_type"] = gr.Radio(list(QUANTIZATION_TYPES), value=d.quantization_type,
                                                   label=t("quantization_type"))
            fields["double_quantization"] = gr.Checkbox(d.double_quantization, label=t("double_quantization"))
            fields["quantization_compute_dtype"] = gr.Dropdown(list(COMPUTE_DTYPES), value=d.quantization_compute_dtype,
                                                               label=t("quantization_compute_dtype"))
    with gr.Group(visible=d.finetuning_type == "freeze") as freeze_group:
        with gr.Row():
            fields["freeze_trainable_layers"] = gr.Number(d.freeze_trainable_layers, precision=0,
                                                          label=t("freeze_trainable_layers"),
                                                          info=t("freeze_trainable_layers_info"))
            fields["freeze_extra_modules"] = gr.Textbox(d.freeze_extra_modules, label=t("freeze_extra_modules"),
                                                        info=t("freeze_extra_modules_info"))
    with gr.Group(visible=d.finetuning_type == "ptuning_v2") as ptuning_group:
        with gr.Row():
            fields["pre_seq_len"] = gr.Number(d.pre_seq_len, precision=0, label=t("pre_seq_len"))
            fields["prefix_projection"] = gr.Checkbox(d.prefix_projection, label=t("prefix_projection"))
    with gr.Group(visible=d.finetuning_type == "distill") as distill_group:
        with gr.Row():
            fields["teacher_adapter"] = gr.Textbox(d.teacher_adapter, label=t("teacher_adapter"),
                                                   info=t("teacher_adapter_info"))
            fields["student_model"] = gr.Textbox(d.student_model, label=t("student_model"), info=t("student_model_info"))
            fields["distill_alpha"] = gr.Number(d.distill_alpha, label=t("distill_alpha"))
            fields["distill_temperature"] = gr.Number(d.distill_temperature, label=t("distill_temperature"))
            fields["distill_mode"] = gr.Radio(list(DISTILL_MODES), value=d.distill_mode, label=t("distill_mode"),
                                              info=t("distill_mode_info"))
    groups = {"lora": lora_group, "qlora": quant_group, "freeze": freeze_group, "ptuning_v2": ptuning_group,
              "distill": distill_group}
    return fields, groups


def create_train_tab(ctx: UIContext, data: dict) -> dict:
    t, d = ctx.t, DEMO_DEFAULTS
    dataset_note = gr.Markdown(t("train_dataset", dataset=d.dataset, format="auto"))
    fields: dict[str, gr.components.Component] = {}
    with gr.Row():
        fields["model_name_or_path"] = gr.Dropdown(ctx.wb.base_model_choices(), value=d.model_name_or_path,
                                                   label=t("model_label"), info=t("model_info"),
                                                   allow_custom_value=True, scale=2)
        fields["template"] = gr.Dropdown(["auto", *TEMPLATES], value=d.template, label=t("template_label"),
                                         info=t("template_info"), scale=1)
        fields["trust_remote_code"] = gr.Checkbox(d.trust_remote_code, label=t("trust_remote_code"),
                                                  info=t("trust_remote_code_info"), scale=1)
    fields["finetuning_type"] = gr.Radio([(t(f"method_{m}"), m) for m in FINETUNING_TYPES],
                                         value=d.finetuning_type, label=t("method_label"))
    method_fields, groups = create_method_fields(t, d)
    fields.update(method_fields)
    with gr.Row():
        fields["learning_rate"] = gr.Number(d.learning_rate, label=t("learning_rate"), info=t("learning_rate_info"))
        fields["num_train_epochs"] = gr.Number(d.num_train_epochs, label=t("epochs"))
        fields["max_steps"] = gr.Number(d.max_steps, label=t("max_steps"), info=t("max_steps_info"), precision=0)
    with gr.Row():
        fields["per_device_train_batch_size"] = gr.Number(d.per_device_train_batch_size, label=t("batch_size"),
                                                          precision=0)
        fields["gradient_accumulation_steps"] = gr.Number(d.gradient_accumulation_steps, label=t("grad_accum"),
                                                          precision=0)
        fields["cutoff_len"] = gr.Number(d.cutoff_len, label=t("cutoff_len"), precision=0)
        fields["gradient_checkpointing"] = gr.Checkbox(d.gradient_checkpointing, label=t("gradient_checkpointing"))
    with gr.Accordion(t("advanced"), open=False):
        with gr.Row():
            fields["val_size"] = gr.Number(d.val_size, label=t("val_size"), info=t("val_size_info"))
            fields["eval_steps"] = gr.Number(d.eval_steps, label=t("eval_steps"), info=t("eval_steps_info"),
                                             precision=0)
            fields["early_stopping_patience"] = gr.Number(d.early_stopping_patience, precision=0,
                                                          label=t("early_stopping_patience"),
                                                          info=t("early_stopping_patience_info"))
            fields["packing"] = gr.Checkbox(d.packing, label=t("packing"), info=t("packing_info"))
        with gr.Row():
            fields["eval_dataset"] = gr.Dropdown([""] + ctx.wb.dataset_choices(), value=d.eval_dataset,
                                                 label=t("eval_dataset"), info=t("eval_dataset_info"),
                                                 allow_custom_value=True)
            fields["precision"] = gr.Dropdown(list(PRECISIONS), value=d.precision, label=t("precision"),
                                              info=t("precision_info"))
        with gr.Row():
            fields["lr_scheduler_type"] = gr.Dropdown(list(LR_SCHEDULERS), value=d.lr_scheduler_type,
                                                      label=t("lr_scheduler_type"))
            fields["warmup_ratio"] = gr.Number(d.warmup_ratio, label=t("warmup_ratio"))
            fields["weight_decay"] = gr.Number(d.weight_decay, label=t("weight_decay"))
            fields["max_grad_norm"] = gr.Number(d.max_grad_norm, label=t("max_grad_norm"))
        with gr.Row():
            fields["save_steps"] = gr.Number(d.save_steps, label=t("save_steps"), info=t("save_steps_info"),
                                             precision=0)
            fields["save_total_limit"] = gr.Number(d.save_total_limit, label=t("save_total_limit"), precision=0)
            fields["neftune_noise_alpha"] = gr.Number(d.neftune_noise_alpha, label=t("neftune_noise_alpha"))
            fields["seed"] = gr.Number(d.seed, label=t("seed"), precision=0)
            fields["nproc_per_node"] = gr.Number(d.nproc_per_node, label=t("nproc_per_node"),
                                                 info=t("nproc_per_node_info"), precision=0)
    continue_from = gr.Dropdown([(t("continue_none"), "")] + [(r, r) for r in _finished_runs(ctx)], value="",
                                label=t("continue_from"), info=t("continue_from_info"), allow_custom_value=True)
    estimate = gr.Markdown()
    with gr.Accordion(t("command_preview"), open=False):
        command = gr.Code(language="shell", show_label=False)
        with gr.Row():
            save_yaml_button = gr.Button(t("yaml_save"))
            load_yaml_button = gr.UploadButton(t("yaml_load"), file_types=[".yaml", ".yml"])
        yaml_file = gr.File(label=t("yaml_file"), interactive=False)
    with gr.Row():
        start = gr.Button(t("start"), variant="primary", elem_id="train-start")
        abort = gr.Button(t("abort"), variant="stop", elem_id="train-abort")
        resume = gr.Button(t("resume"), elem_id="train-resume")
    message = gr.Markdown(elem_id="train-message")
    progress = gr.HTML(progress_html(None, t), elem_id="train-progress")
    chart = gr.Plot(loss_figure([], t), label=t("chart_loss"), elem_id="train-chart")
    with gr.Accordion(t("log_label"), open=False):
        log = gr.Textbox(lines=12, max_lines=12, show_label=False, autoscroll=True)
    with gr.Accordion(t("status_label"), open=False):
        status_json = gr.JSON()
    seen = gr.State(("", -1, ""))  # (run, metrics count, state) already drawn: skip redrawing an unchanged chart
    timer = gr.Timer(POLL_SECONDS)

    keys = list(fields)
    for key, component in fields.items():
        component.elem_id = f"field-{key}"  # stable handles for browser tests, whatever the language
    form = [fields[k] for k in keys] + [data["dataset"], data["format"], data["columns"], continue_from]

    def form_config(*values) -> RunConfig:
        *own, dataset, fmt, columns, parent = values
        config = DEMO_DEFAULTS.replace(**dict(zip(keys, own)), dataset=dataset, dataset_format=fmt,
                                       columns=columns or "")
        return ctx.wb.continued_config(parent, config) if parent else config

    def start_training(*values):
        try:
            run = ctx.wb.start_training(form_config(*values).validate())
        except BusyError as exc:
            return "⏳ " + t("busy", run=exc.run)
        except (ConfigError, DataError, ModelError) as exc:
            return ctx.error(exc)
        return "✅ " + t("started", run=run)

    def resume_training():
        run = ctx.wb.current_run_name()
        try:
            ctx.wb.resume_training(run or "")
        except BusyError as exc:
            return "⏳ " + t("busy", run=exc.run)
        except (ConfigError, DataError) as exc:
            return ctx.error(exc)
        return "▶ " + t("resumed", run=run)

    def show_estimate(*values) -> str:
        try:
            result, device = ctx.wb.estimate(form_config(*values))
        except Exception as exc:  # noqa: BLE001 - an estimate must never break the form
            reason = t.message(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            return t("estimate_unavailable", reason=reason)
        parts = result.parts_gib()
        text = t("estimate_text", **parts, trainable=f"{result.trainable_params:,}", params=f"{result.total_params:,}")
        if device is None:
            return f"{text} · {t('estimate_no_gpu')}"
        name, memory = device
        key = "estimate_exceeds" if result.total > memory else "estimate_fits"
        return f"{text} · {t(key, device=name, memory=round(memory / 2**30, 1))}"

    def show_command(*values) -> str:
        try:
            return command_line(form_config(*values))
        except (ConfigError, DataError) as exc:
            return f"# {t.message(str(exc))}"

    def save_config(*values):
        try:
            return ctx.wb.save_config(form_config(*values)), ""
        except (ConfigError, DataError) as exc:
            return None, ctx.error(exc)

    def load_config(file_path: str):
        """Fill the form from a YAML file (ours or LLaMA-Factory's); notes say what was ignored."""
        try:
            config, notes = load_yaml_with_notes(file_path)
            config.validate()  # a value the form cannot show (an unknown template, say) is named, not loaded
        except ConfigError as exc:
            return [gr.skip()] * (len(keys) + 3) + [ctx.error(exc)]
        values = config.to_dict()
        text = "✅ " + t("yaml_loaded", file=Path(file_path).name) + "".join(f"\n\n⚠️ {n}" for n in notes)
        return [values[k] for k in keys] + [config.dataset, config.dataset_format, config.columns, text]

    def abort_training():
        running = ctx.wb.jobs.running_run
        if running is None or not ctx.wb.abort_training():
            return t("nothing_running")
        return "⏹ " + t("aborting", run=running.name)

    def poll(drawn, shown_message: str):
        snapshot = ctx.wb.snapshot(ctx.wb.current_run_name())
        if snapshot is None:
            return progress_html(None, t), gr.skip(), gr.skip(), {}, drawn, *buttons_for(None), gr.skip()
        key = (snapshot.name, len(snapshot.metrics), snapshot.state)
        figure = gr.skip() if key == tuple(drawn) else loss_figure(snapshot.metrics, t)
        # A "stopping…" or "resumed" notice is stale once the run has reached an end state.
        ended = snapshot.state in ("finished", "failed", "aborted")
        message_update = "" if ended and (shown_message or "").startswith(("⏹", "▶")) else gr.skip()
        return (progress_html(snapshot, t), figure, snapshot.log_tail, snapshot.status, key,
                *buttons_for(snapshot.state), message_update)

    def buttons_for(state: str | None):
        """Abort and Resume are clickable only when they have something to act on. Start stays clickable: from a
        second tab it answers 'busy' with the running run's name."""
        return (gr.update(interactive=state in ("queued", "running")),
                gr.update(interactive=state in ("aborted", "failed")))

    def method_groups(method: str) -> list:
        """Only the chosen method's own fields are visible."""
        return [gr.update(visible=method in LORA_METHODS)] + \
            [gr.update(visible=method == name) for name in ("qlora", "freeze", "ptuning_v2", "distill")]

    def method_changed(method: str, model: str):
        """Show only the chosen method's fields, and suggest a learning rate that suits it."""
        return (*method_groups(method), suggested_learning_rate(model, method))

    method_outputs = [groups["lora"], groups["qlora"], groups["freeze"], groups["ptuning_v2"], groups["distill"],
                      fields["learning_rate"]]
    for trigger in (fields["finetuning_type"], fields["model_name_or_path"]):
        trigger.input(method_changed, [fields["finetuning_type"], fields["model_name_or_path"]], method_outputs,
                      api_name=False)
    def form_changed(*values) -> tuple[str, str]:
        return show_estimate(*values), show_command(*values)

    for component in form:
        component.change(form_changed, form, [estimate, command], api_name=False, show_progress="hidden")
    save_yaml_button.click(save_config, form, [yaml_file, message], api_name="save_config")
    load_yaml_button.upload(load_config, load_yaml_button,
                            [fields[k] for k in keys] + [data["dataset"], data["format"], data["columns"], message],
                            api_name="load_config")
    start.click(start_training, form, message, api_name="start_training")
    abort.click(abort_training, None, message, api_name="abort_training")
    resume.click(resume_training, None, message, api_name="resume_training")
    timer.tick(poll, [seen, message], [progress, chart, log, status_json, seen, abort, resume, message],
               api_name="poll", show_progress="hidden")
    for component in (data["dataset"], data["format"]):
        component.change(lambda ds, fmt: t("train_dataset", dataset=Path(ds or "").name, format=fmt),
                         [data["dataset"], data["format"]],
                         dataset_note, api_name=False)
    def restore_running_form():
        """After a refresh or in a new tab, the form shows the settings of the run that is training."""
        running = ctx.wb.jobs.current.config if ctx.wb.jobs.running_run is not None else None
        if running is None:
            return [gr.skip()] * (len(keys) + 3)
        values = running.to_dict()
        return [values[k] for k in keys] + [running.dataset, running.dataset_format, running.columns]

    def refresh_choices():
        return (gr.update(choices=[(t("continue_none"), "")] + [(r, r) for r in _finished_runs(ctx)]),
                gr.update(choices=ctx.wb.base_model_choices()))

    return {"start": start, "abort": abort, "message": message, "status": status_json, "fields": fields,
            "refresh": (refresh_choices, None, [continue_from, fields["model_name_or_path"]]),
            "method_groups": (method_groups, fields["finetuning_type"], method_outputs[:-1]),
            "restore": (restore_running_form, None,
                        [fields[k] for k in keys] + [data["dataset"], data["format"], data["columns"]]),
            "estimate": dict(fn=show_estimate, inputs=form, outputs=estimate),
            "command": dict(fn=show_command, inputs=form, outputs=command)}

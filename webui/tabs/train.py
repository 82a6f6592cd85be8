"""Train tab: the form for one run, Start/Abort/Resume, and a live view (progress, loss chart, log) of the job.

Every form field is named after its RunConfig key, so the form, the YAML file and the CLI stay one thing. Each
method's own fields come from its `Method.fields` (core/methods/), so a new method brings its form group with
it. The fields carry no min/max of their own: RunConfig validation names the field and the bad value, in the
page's language. The live view is driven by a timer that reads the run folder, so it shows the same thing after
a page refresh, in a second browser tab, or after the browser was closed while training went on.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from core.config import (
    DISTRIBUTED,
    LR_SCHEDULERS,
    TRACKERS,
    RunConfig,
    command_line,
    load_yaml_with_notes,
)
from core.data.readers import DEMO_DATASETS
from core.data.template import TEMPLATES
from core.errors import BusyError
from core.methods import METHODS, get_method
from core.methods.base import Field
from core.models.loader import DTYPES
from core.stages import STAGES, SUPERVISED, get_stage, is_preference
from core.suggest import learning_rate_for
from webui.charts import loss_figure, wants_log_scale
from webui.context import UIContext
from webui.formatting import format_duration
from webui.tabs.data import dataset_options

POLL_SECONDS = 1.0
# Opening the log shows its newest lines. The box is laid out some frames after the click (later on a busy
# machine), and scrolling a box not yet laid out does nothing: try each frame until it is, for up to 10 s.
SCROLL_LOG_TO_END = """() => {
  const until = Date.now() + 10000;
  const scroll = () => {
    const box = document.querySelector('#train-log textarea');
    if (box && box.clientHeight > 0) {
      box.scrollTop = box.scrollHeight;
      if (box.scrollTop + box.clientHeight >= box.scrollHeight - 4) return;
    }
    if (Date.now() < until) requestAnimationFrame(scroll);
  };
  requestAnimationFrame(scroll);
}"""
# The form's defaults suit the tiny demo model: it learns the identity set in well under a minute.
DEMO_DEFAULTS = RunConfig(learning_rate=4e-3, num_train_epochs=5, cutoff_len=512, prefix_projection=True)


def suggested_learning_rate(model: str, method: str, stage: str = SUPERVISED) -> float:
    """Each method's (or preference stage's) suggestion: the random demo model needs large steps, real models
    small ones (core/suggest.py)."""
    return learning_rate_for(stage or SUPERVISED, model or "", method)


def stage_fields() -> tuple[Field, ...]:
    """Every stage's own fields, each once, in registry order: the train tab's stage group."""
    return tuple({spec.key: spec for stage in STAGES.values() for spec in stage.fields}.values())


def has_stage_fields(stage: str) -> bool:
    return stage in STAGES and bool(get_stage(stage).fields)


def progress_html(snapshot, ctx: UIContext) -> str:
    t = ctx.t
    if snapshot is None:
        return f"<div class='gw-progress-text'>{html.escape(t('progress_none'))}</div>"
    status = snapshot.status
    step, total = int(status.get("step") or 0), int(status.get("max_steps") or 0)
    percent = int(100 * step / total) if total else 0
    state = snapshot.state
    eta = status.get("eta") if state == "running" else 0
    text = t(
        "progress_text",
        run=snapshot.name,
        state=t.state(state),
        step=step,
        total=total or "?",
        percent=percent,
        elapsed=format_duration(status.get("elapsed")),
        eta=format_duration(eta),
    )
    if state in ("finished", "failed", "aborted", "interrupted"):
        # Not what the form below will train: after a reload the form shows fresh settings, this line the past.
        text = t("progress_last", text=text)
    notes = []
    if state == "interrupted":
        checkpoint = status.get("checkpoint")
        notes.append(
            t("progress_interrupted", step=step, checkpoint=checkpoint)
            if checkpoint
            else t("progress_interrupted_no_checkpoint", step=step)
        )
    if status.get("error") and state == "failed":
        notes.append(ctx.status_error(status))
    if status.get("skipped_rows"):
        notes.append(t.message(status["skipped_rows"]))
    extra = "".join(f"<div class='gw-note gw-{state}'>{html.escape(note)}</div>" for note in notes)
    return (
        f"<div class='gw-progress'><div class='gw-bar gw-{state}' style='width:{percent}%'></div></div>"
        f"<div class='gw-progress-text'>{html.escape(text)}</div>{extra}"
    )


def field_component(spec: Field, t, value: Any) -> gr.components.Component:
    """One setting as a form component, labelled `field_<key>` (with `field_<key>_info` as its hint)."""
    options: dict[str, Any] = {"label": t.label(spec.key), "elem_id": f"field-{spec.key}"}
    info = t.get(f"field_{spec.key}_info", "")
    if info:
        options["info"] = info
    if spec.kind == "bool":
        return gr.Checkbox(value, **options)
    if spec.kind == "text":
        return gr.Textbox(value, **options)
    if spec.kind == "choice":
        return gr.Radio(list(spec.choices), value=value, **options)
    return gr.Number(value, precision=0 if spec.kind == "int" else None, **options)


def create_method_fields(t, d: RunConfig) -> tuple[dict, list[tuple[frozenset, gr.Group]]]:
    """Each method's own fields in a group of their own; a group shows when the chosen method reads its keys."""
    fields: dict[str, gr.components.Component] = {}
    groups: list[tuple[frozenset, gr.Group]] = []
    for method in METHODS.values():
        if not method.fields:
            continue
        keys = frozenset(spec.key for spec in method.fields)
        with gr.Group(visible=bool(keys & set(get_method(d.finetuning_type).keys))) as group:
            with gr.Row():
                for spec in method.fields:
                    fields[spec.key] = field_component(spec, t, getattr(d, spec.key))
        groups.append((keys, group))
    return fields, groups


def create_train_tab(ctx: UIContext, data: dict) -> dict:
    t, d = ctx.t, DEMO_DEFAULTS
    fields: dict[str, gr.components.Component] = {}
    with gr.Row():
        # The Data tab's choice, picked here too: one dataset in use, whichever tab it was chosen in.
        dataset = gr.Dropdown(
            [(name, name) for name in DEMO_DATASETS],
            value=d.dataset,
            label=t.label("dataset"),
            info=t("train_dataset_info"),
            allow_custom_value=True,
            scale=3,
            elem_id="train-dataset",
        )
        dataset_note = gr.Markdown(t("train_dataset", dataset=d.dataset, format="auto"))

    def field(key: str, kind: str = "number", choices: tuple = ()) -> gr.components.Component:
        fields[key] = field_component(Field(key, kind, choices), t, getattr(d, key))
        return fields[key]

    with gr.Row():
        # Choices are read from the workspace when the page opens (nothing of it is in the page before login).
        fields["model_name_or_path"] = gr.Dropdown(
            [d.model_name_or_path],
            value=d.model_name_or_path,
            label=t.label("model_name_or_path"),
            info=t("field_model_name_or_path_info"),
            allow_custom_value=True,
            scale=2,
            elem_id="field-model_name_or_path",
        )
        fields["template"] = gr.Dropdown(
            ["auto", *TEMPLATES],
            value=d.template,
            label=t.label("template"),
            info=t("field_template_info"),
            scale=1,
            elem_id="field-template",
        )
        field("enable_thinking", "bool")
        field("trust_remote_code", "bool")
    fields["finetuning_type"] = gr.Radio(
        [(t(f"method_{m}"), m) for m in METHODS],
        value=d.finetuning_type,
        label=t.label("finetuning_type"),
        elem_id="field-finetuning_type",
    )
    method_fields, groups = create_method_fields(t, d)
    fields.update(method_fields)
    field("stage", "choice", tuple(STAGES))
    stage_note = gr.Markdown(elem_id="train-stage-note")  # why the stage changed with the dataset
    # The preference stages' own settings (core/stages/): shown once a stage that has some is chosen.
    with gr.Group(visible=has_stage_fields(d.stage)) as preference_group:
        with gr.Row():
            for spec in stage_fields():
                field(spec.key, spec.kind, spec.choices)
    with gr.Row():
        field("learning_rate")
        field("num_train_epochs")
        field("max_steps", "int")
    with gr.Row():
        field("per_device_train_batch_size", "int")
        field("gradient_accumulation_steps", "int")
        field("cutoff_len", "int")
        field("gradient_checkpointing", "bool")
    with gr.Accordion(t("advanced"), open=False):
        with gr.Row():
            field("val_size")
            field("eval_steps", "int")
            field("early_stopping_patience", "int")
            field("packing", "bool")
            field("fused_loss", "bool")
        with gr.Row():
            field("auto_batch_size", "bool")
            field("offload_activations", "bool")
            field("torch_compile", "bool")
            field("use_liger_kernel", "bool")
            field("router_aux_loss_coef")
        with gr.Row():
            fields["report_to"] = gr.Dropdown(
                list(TRACKERS),
                value=d.report_to,
                label=t.label("report_to"),
                info=t("field_report_to_info"),
                allow_custom_value=True,
                elem_id="field-report_to",
            )
        with gr.Row():
            fields["eval_dataset"] = gr.Dropdown(
                [("", "")],
                value=d.eval_dataset,
                label=t.label("eval_dataset"),
                info=t("field_eval_dataset_info"),
                allow_custom_value=True,
                elem_id="field-eval_dataset",
            )
            fields["precision"] = gr.Dropdown(
                list(DTYPES),
                value=d.precision,
                label=t.label("precision"),
                info=t("field_precision_info"),
                elem_id="field-precision",
            )
        with gr.Row():
            fields["lr_scheduler_type"] = gr.Dropdown(
                list(LR_SCHEDULERS),
                value=d.lr_scheduler_type,
                label=t.label("lr_scheduler_type"),
                elem_id="field-lr_scheduler_type",
            )
            field("warmup_ratio")
            field("weight_decay")
            field("max_grad_norm")
        with gr.Row():
            field("save_steps", "int")
            field("save_total_limit", "int")
            field("neftune_noise_alpha")
            field("seed", "int")
            field("nproc_per_node", "int")
        with gr.Row():
            field("distributed", "choice", DISTRIBUTED)
            # Several machines: not a setting of the run; what each other machine must run to join it.
            nnodes = gr.Number(1, precision=0, minimum=1, label=t("nnodes"), info=t("nnodes_info"), elem_id="nnodes")
            master_addr = gr.Textbox("", label=t("master_addr"), info=t("master_addr_info"), elem_id="master-addr")
        processes_plan = gr.Markdown(elem_id="processes-plan")
    continue_from = gr.Dropdown(
        [(t("continue_none"), "")],
        value="",
        label=t("continue_from"),
        info=t("continue_from_info"),
        allow_custom_value=True,
    )
    estimate = gr.Markdown()
    with gr.Accordion(t("command_preview"), open=False):
        command = gr.Code(language="shell", label=t("command_preview"), show_label=False)
        with gr.Row():
            save_yaml_button = gr.Button(t("yaml_save"))
            load_yaml_button = gr.UploadButton(t("yaml_load"), file_types=[".yaml", ".yml"])
        yaml_file = gr.File(label=t("yaml_file"), interactive=False)
    with gr.Row():
        start = gr.Button(t("start"), variant="primary", elem_id="train-start")
        abort = gr.Button(t("abort"), variant="stop", elem_id="train-abort")
        resume = gr.Button(t("resume"), elem_id="train-resume")
    message = gr.Markdown(elem_id="train-message")
    refused_start = gr.State(False)  # this page's last Start was refused: nothing new is training
    finished_run = gr.Textbox(visible=False)  # the newest finished run: other tabs refresh their lists on it
    progress = gr.HTML(progress_html(None, ctx), elem_id="train-progress")
    try_in_chat = gr.Button(t("try_in_chat"), visible=False, elem_id="train-try-chat")
    chart = gr.Plot(loss_figure([], t), label=t("chart_loss"), elem_id="train-chart")
    # Ticks itself once the loss spans more than a decade, unless the user has set it by hand.
    with gr.Row():
        log_scale = gr.Checkbox(False, label=t("chart_log_scale"), elem_id="train-log-scale")
        smoothing = gr.Checkbox(True, label=t("chart_smooth"), elem_id="train-smooth")
    log_scale_by_hand = gr.State(False)
    with gr.Accordion(t("log_label"), open=False) as log_accordion:
        log = gr.Textbox(
            lines=12, max_lines=12, label=t("log_label"), show_label=False, autoscroll=True, elem_id="train-log"
        )
    with gr.Accordion(t("status_label"), open=False):
        status_json = gr.JSON()
    # (run, metrics, state, log scale, smoothing) drawn: skip redrawing an unchanged chart
    seen = gr.State(("", -1, "", False, True))
    timer = gr.Timer(POLL_SECONDS)

    keys = list(fields)
    form = [fields[k] for k in keys] + [data["dataset"], data["format"], data["columns"], continue_from]

    def form_config(*values) -> RunConfig:
        *own, dataset, fmt, columns, parent = values
        config = DEMO_DEFAULTS.replace(
            **dict(zip(keys, own)), dataset=dataset, dataset_format=fmt, columns=columns or ""
        )
        return ctx.wb.continued_config(parent, config) if parent else config

    def start_training(*values):
        """The message, and whether the progress below should step aside (a refused Start trained nothing, so
        the previous run's bar must not sit under the error as if it belonged to it)."""
        try:
            run = ctx.wb.start_training(form_config(*values).validate())
        except BusyError as exc:
            return t("busy", run=exc.run), False
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            return ctx.error(exc), True
        return t("started", run=run), False

    def resume_training():
        run = ctx.wb.current_run_name()
        try:
            ctx.wb.resume_training(run or "")
        except BusyError as exc:
            return t("busy", run=exc.run)
        except Exception as exc:  # noqa: BLE001
            return ctx.error(exc)
        return t("resumed", run=run)

    def show_estimate(*values) -> str:
        try:
            result, device = ctx.wb.estimate(form_config(*values))
        except Exception as exc:  # noqa: BLE001 - an estimate must never break the form
            return t("estimate_unavailable", reason=t.message(exc))
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
        except Exception as exc:  # noqa: BLE001
            return f"# {t.message(exc)}"

    def save_config(*values):
        try:
            return ctx.wb.save_config(form_config(*values)), ""
        except Exception as exc:  # noqa: BLE001
            return None, ctx.error(exc)

    def load_config(file_path: str):
        """Fill the form from a YAML file (ours or LLaMA-Factory's); notes say what was ignored."""
        try:
            config, notes = load_yaml_with_notes(file_path)
            config.validate()  # a value the form cannot show (an unknown template, say) is named, not loaded
        except Exception as exc:  # noqa: BLE001
            return [gr.skip()] * (len(keys) + 3) + [ctx.error(exc)]
        values = config.to_dict()
        text = t("yaml_loaded", file=Path(file_path).name) + "".join(f"\n\n{n}" for n in notes)
        return [values[k] for k in keys] + [config.dataset, config.dataset_format, config.columns, text]

    def abort_training():
        running = ctx.wb.training_run()
        if running is None or not ctx.wb.abort_training():
            return t("nothing_running")
        return t("aborting", run=running)

    def poll(drawn, shown_message: str, refused: bool, log_now: bool, log_by_hand: bool, smooth: bool = True):
        snapshot = ctx.wb.snapshot(ctx.wb.current_run_name())
        if snapshot is None or (refused and snapshot.state not in ("queued", "running")):
            if snapshot is None:
                idle = progress_html(None, ctx)
            else:
                idle = f"<div class='gw-progress-text'>{t('progress_refused')}</div>"
            blank = ("", -1, "", False, True)
            empty = loss_figure([], t) if tuple(drawn) != blank else gr.skip()
            return (
                idle,
                empty,
                gr.skip(),
                {},
                blank,
                *buttons_for(None),
                gr.skip(),
                gr.skip(),
                gr.update(visible=False),
                gr.skip(),
            )
        use_log = log_now if log_by_hand else wants_log_scale(snapshot.metrics)
        key = (snapshot.name, len(snapshot.metrics), snapshot.state, use_log, bool(smooth))
        figure = gr.skip() if key == tuple(drawn) else loss_figure(snapshot.metrics, t, use_log, bool(smooth))
        # A "stopping…" or "resumed" notice is stale once the run has reached an end state.
        ended = snapshot.state in ("finished", "failed", "aborted", "interrupted")
        stale = (t("aborting", run=snapshot.name), t("resumed", run=snapshot.name))
        message_update = "" if ended and (shown_message or "") in stale else gr.skip()
        finished = snapshot.state == "finished"
        return (
            progress_html(snapshot, ctx),
            figure,
            snapshot.log_tail,
            snapshot.status,
            key,
            *buttons_for(snapshot.state, snapshot.status.get("cause") == "settings"),
            message_update,
            snapshot.name if finished else gr.skip(),
            gr.update(visible=finished and snapshot.name in ctx.wb.runs_with_results()),
            gr.skip() if log_by_hand or use_log == log_now else use_log,
        )

    def buttons_for(state: str | None, settings_failed: bool = False):
        """Abort and Resume are clickable only when they have something to act on (a run that failed on its own
        settings would fail the same way again). Start stays clickable: from a second tab it answers 'busy' with
        the running run's name."""
        return (
            gr.update(interactive=state in ("queued", "running")),
            gr.update(interactive=state in ("aborted", "failed", "interrupted") and not settings_failed),
        )

    def method_groups(method: str) -> list:
        """Only the chosen method's own fields are visible."""
        wanted = set(get_method(method).keys) if method in METHODS else set()
        return [gr.update(visible=bool(group_keys & wanted)) for group_keys, _ in groups]

    def method_changed(method: str, model: str, stage: str = SUPERVISED):
        """Show only the chosen method's fields, and suggest a learning rate that suits it (and the stage)."""
        return (*method_groups(method), suggested_learning_rate(model, method, stage))

    method_outputs = [group for _, group in groups] + [fields["learning_rate"]]
    method_inputs = [fields["finetuning_type"], fields["model_name_or_path"], fields["stage"]]
    for trigger in (fields["finetuning_type"], fields["model_name_or_path"]):
        trigger.input(method_changed, method_inputs, method_outputs, api_name=False)

    # A stage picked by hand brings its own learning rate (dpo steps are far smaller than sft's). `select` fires on
    # the user's click only: a stage set by the dataset (follow_data) comes with its rate already.
    def stage_picked(method: str, model: str, picked: gr.SelectData):
        return suggested_learning_rate(model, method, str(picked.value))

    fields["stage"].select(stage_picked, method_inputs[:2], fields["learning_rate"], api_name=False)

    fields["stage"].change(
        lambda stage: gr.update(visible=has_stage_fields(stage)), fields["stage"], preference_group, api_name=False
    )

    def show_processes(nproc, distributed, machines, address) -> str:
        try:
            plan, intro, commands = ctx.wb.process_plan(nproc or 1, distributed, machines or 1, address or "")
        except Exception as exc:  # noqa: BLE001 - a hint must never break the form
            return t.message(exc)
        if not commands:
            return t.message(plan)
        listing = "\n".join(f"# node {rank}\n{command}" for rank, command in enumerate(commands))
        return f"{t.message(plan)}\n\n{t.message(intro)}\n\n```bash\n{listing}\n```"

    plan_inputs = [fields["nproc_per_node"], fields["distributed"], nnodes, master_addr]
    for component in plan_inputs:
        component.change(show_processes, plan_inputs, processes_plan, api_name=False, show_progress="hidden")

    def form_changed(*values) -> tuple[str, str]:
        return show_estimate(*values), show_command(*values)

    for component in form:
        component.change(form_changed, form, [estimate, command], api_name=False, show_progress="hidden")
    save_yaml_button.click(save_config, form, [yaml_file, message], api_name="save_config")
    load_yaml_button.upload(
        load_config,
        load_yaml_button,
        [fields[k] for k in keys] + [data["dataset"], data["format"], data["columns"], message],
        api_name="load_config",
    )
    start.click(start_training, form, [message, refused_start], api_name="start_training")
    abort.click(abort_training, None, message, api_name="abort_training")
    resume.click(resume_training, None, message, api_name="resume_training")
    log_scale.input(lambda: True, None, log_scale_by_hand, api_name=False)
    # A log opened while it was hidden would show its middle: opening it shows the newest lines.
    log_accordion.expand(None, None, None, js=SCROLL_LOG_TO_END, api_name=False)
    timer.tick(
        poll,
        [seen, message, refused_start, log_scale, log_scale_by_hand, smoothing],
        [progress, chart, log, status_json, seen, abort, resume, message, finished_run, try_in_chat, log_scale],
        api_name="poll",
        show_progress="hidden",
    )
    for component in (data["dataset"], data["format"]):
        component.change(
            lambda ds, fmt: (t("train_dataset", dataset=Path(ds or "").name, format=fmt), gr.update(value=ds)),
            [data["dataset"], data["format"]],
            [dataset_note, dataset],
            api_name=False,
        )
    # Picked here: the Data tab follows (its table, sample and histogram show the same dataset).
    dataset.input(
        lambda ds: (ds, 1, ""), dataset, [data["dataset"], data["sample_index"], data["columns"]], api_name=False
    ).then(**data["preview"], api_name=False)

    def follow_data(ds: str, fmt: str, columns: str, model: str, method: str, stage: str):
        """Pairwise data trains a preference stage, other data sft, each with its own learning rate. A stage
        that already fits the data (orpo on pairs, say) is left as the user set it."""
        suggested = ctx.wb.suggest_stage(ds or "", fmt or "auto", columns or "", model or "", method or "lora")
        if suggested is None or is_preference(suggested[0]) == is_preference(stage):
            return gr.skip(), gr.skip(), ""
        new_stage, rate = suggested
        key = "stage_follows_data" if is_preference(new_stage) else "stage_follows_sft"
        return new_stage, rate, t(key, dataset=Path(ds).name, stage=new_stage, rate=f"{rate:g}")

    data["dataset"].change(
        follow_data,
        [
            data["dataset"],
            data["format"],
            data["columns"],
            fields["model_name_or_path"],
            fields["finetuning_type"],
            fields["stage"],
        ],
        [fields["stage"], fields["learning_rate"], stage_note],
        api_name=False,
    )

    def restore_running_form():
        """After a refresh or in a new tab, the form shows the settings of the run that is training."""
        running = ctx.wb.training_config()
        if running is None:
            return [gr.skip()] * (len(keys) + 3)
        values = running.to_dict()
        return [values[k] for k in keys] + [running.dataset, running.dataset_format, running.columns]

    def refresh_choices():
        finished = [run.name for run in ctx.wb.runs() if run.state == "finished"]
        return (
            gr.update(choices=[(t("continue_none"), "")] + [(r, r) for r in finished]),
            gr.update(choices=ctx.wb.base_model_choices()),
            gr.update(choices=[("", "")] + dataset_options(ctx)),
            gr.update(choices=dataset_options(ctx)),
        )

    return {
        "start": start,
        "finished_run": finished_run,
        "try_in_chat": try_in_chat,
        "abort": abort,
        "message": message,
        "status": status_json,
        "fields": fields,
        "refresh": (
            refresh_choices,
            None,
            [continue_from, fields["model_name_or_path"], fields["eval_dataset"], dataset],
        ),
        "dataset": dataset,
        "method_groups": (method_groups, fields["finetuning_type"], method_outputs[:-1]),
        "restore": (
            restore_running_form,
            None,
            [fields[k] for k in keys] + [data["dataset"], data["format"], data["columns"]],
        ),
        "estimate": dict(fn=show_estimate, inputs=form, outputs=estimate),
        "processes": dict(fn=show_processes, inputs=plan_inputs, outputs=processes_plan),
        "command": dict(fn=show_command, inputs=form, outputs=command),
    }

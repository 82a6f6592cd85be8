"""Train tab: the form for one run, Start/Abort/Resume, and a live view (progress, loss chart, log) of the job.

Every form field is named after its RunConfig key, so the form, the YAML file and the CLI stay one thing. Each
method's own fields come from its `Method.fields` (core/methods/), so a new method brings its form group with
it. The fields carry no min/max of their own: RunConfig validation names the field and the bad value, in the
page's language. The live view is driven by a timer that reads the run folder, so it shows the same thing after
a page refresh, in a second browser tab, or after the browser was closed while training went on. This module lays
the tab out and wires its events; what the events do is in train_handlers.py.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from core.config import DISTRIBUTED, LR_SCHEDULERS, TRACKERS, RunConfig
from core.data.readers import DEMO_DATASETS
from core.data.template import TEMPLATES
from core.methods import METHODS, get_method
from core.methods.base import Field
from core.models.loader import DTYPES
from core.stages import STAGES
from webui.charts import loss_figure
from webui.context import UIContext
from webui.tabs import train_handlers as h
from webui.tabs.train_handlers import DEMO_DEFAULTS

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


def stage_fields() -> tuple[Field, ...]:
    """Every stage's own fields, each once, in registry order: the train tab's stage group."""
    return tuple({spec.key: spec for stage in STAGES.values() for spec in stage.fields}.values())


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


def dropdown(ui: SimpleNamespace, t, key: str, choices: list, info: bool = True, **options) -> gr.Dropdown:
    """A setting picked from a list, labelled like every other field."""
    if info:
        options["info"] = t(f"field_{key}_info")
    value = getattr(DEMO_DEFAULTS, key)
    ui.fields[key] = gr.Dropdown(choices, value=value, label=t.label(key), elem_id=f"field-{key}", **options)
    return ui.fields[key]


def model_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    """Dataset, model, template, method and stage: what is trained, and how."""
    t, d = ctx.t, DEMO_DEFAULTS
    field = partial(add_field, ui, t)
    with gr.Row():
        # The Data tab's choice, picked here too: one dataset in use, whichever tab it was chosen in.
        ui.dataset = gr.Dropdown(
            [(name, name) for name in DEMO_DATASETS],
            value=d.dataset,
            label=t.label("dataset"),
            info=t("train_dataset_info"),
            allow_custom_value=True,
            scale=3,
            elem_id="train-dataset",
        )
        ui.dataset_note = gr.Markdown(t("train_dataset", dataset=d.dataset, format="auto"))
    with gr.Row():
        # Choices are read from the workspace when the page opens (nothing of it is in the page before login).
        dropdown(ui, t, "model_name_or_path", [d.model_name_or_path], allow_custom_value=True, scale=2)
        dropdown(ui, t, "template", ["auto", *TEMPLATES], scale=1)
        field("enable_thinking", "bool")
        field("trust_remote_code", "bool")
    ui.fields["finetuning_type"] = gr.Radio(
        [(t(f"method_{m}"), m) for m in METHODS],
        value=d.finetuning_type,
        label=t.label("finetuning_type"),
        elem_id="field-finetuning_type",
    )
    method_fields, ui.groups = create_method_fields(t, d)
    ui.fields.update(method_fields)
    field("stage", "choice", tuple(STAGES))
    ui.stage_note = gr.Markdown(elem_id="train-stage-note")  # why the stage changed with the dataset
    # The preference stages' own settings (core/stages/): shown once a stage that has some is chosen.
    with gr.Group(visible=h.has_stage_fields(d.stage)) as ui.preference_group:
        with gr.Row():
            for spec in stage_fields():
                field(spec.key, spec.kind, spec.choices)


def add_field(ui: SimpleNamespace, t, key: str, kind: str = "number", choices: tuple = ()) -> gr.components.Component:
    ui.fields[key] = field_component(Field(key, kind, choices), t, getattr(DEMO_DEFAULTS, key))
    return ui.fields[key]


def settings_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    """The training settings: the common ones in view, the rest under Advanced."""
    t = ctx.t
    field = partial(add_field, ui, t)
    with gr.Row():
        for key in ("learning_rate", "num_train_epochs"):
            field(key)
        field("max_steps", "int")
    with gr.Row():
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "cutoff_len"):
            field(key, "int")
        field("gradient_checkpointing", "bool")
    with gr.Accordion(t("advanced"), open=False):
        with gr.Row():
            field("val_size")
            field("eval_steps", "int")
            field("early_stopping_patience", "int")
            field("packing", "bool")
            field("fused_loss", "bool")
        with gr.Row():
            for key in ("auto_batch_size", "offload_activations", "torch_compile", "use_liger_kernel"):
                field(key, "bool")
            field("router_aux_loss_coef")
        with gr.Row():  # the GLM-V models' own settings (a text model ignores them)
            field("image_max_pixels", "int")
            field("image_min_pixels", "int")
            field("freeze_vision_tower", "bool")
            field("freeze_multi_modal_projector", "bool")
        with gr.Row():
            dropdown(ui, t, "report_to", list(TRACKERS), allow_custom_value=True)
        with gr.Row():
            dropdown(ui, t, "eval_dataset", [("", "")], allow_custom_value=True)
            dropdown(ui, t, "precision", list(DTYPES))
        with gr.Row():
            dropdown(ui, t, "lr_scheduler_type", list(LR_SCHEDULERS), info=False)
            for key in ("warmup_ratio", "weight_decay", "max_grad_norm"):
                field(key)
        with gr.Row():
            field("save_steps", "int")
            field("save_total_limit", "int")
            field("neftune_noise_alpha")
            field("seed", "int")
            field("nproc_per_node", "int")
        with gr.Row():
            field("distributed", "choice", DISTRIBUTED)
            # Several machines: not a setting of the run; what each other machine must run to join it.
            ui.nnodes = gr.Number(1, precision=0, minimum=1, label=t("nnodes"), info=t("nnodes_info"), elem_id="nnodes")
            ui.master_addr = gr.Textbox("", label=t("master_addr"), info=t("master_addr_info"), elem_id="master-addr")
        ui.processes_plan = gr.Markdown(elem_id="processes-plan")


def run_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    """Continue-from, the estimate, the command and YAML, the buttons and the live view of the job."""
    t = ctx.t
    ui.continue_from = gr.Dropdown(
        [(t("continue_none"), "")],
        value="",
        label=t("continue_from"),
        info=t("continue_from_info"),
        allow_custom_value=True,
    )
    ui.estimate = gr.Markdown()
    with gr.Accordion(t("command_preview"), open=False):
        ui.command = gr.Code(language="shell", label=t("command_preview"), show_label=False)
        with gr.Row():
            ui.save_yaml_button = gr.Button(t("yaml_save"))
            ui.load_yaml_button = gr.UploadButton(t("yaml_load"), file_types=[".yaml", ".yml"])
        ui.yaml_file = gr.File(label=t("yaml_file"), interactive=False)
    with gr.Row():
        ui.start = gr.Button(t("start"), variant="primary", elem_id="train-start")
        ui.abort = gr.Button(t("abort"), variant="stop", elem_id="train-abort")
        ui.resume = gr.Button(t("resume"), elem_id="train-resume")
    ui.message = gr.Markdown(elem_id="train-message")
    ui.refused_start = gr.State(False)  # this page's last Start was refused: nothing new is training
    ui.finished_run = gr.Textbox(visible=False)  # the newest finished run: other tabs refresh their lists on it
    ui.progress = gr.HTML(h.progress_html(None, ctx), elem_id="train-progress")
    ui.try_in_chat = gr.Button(t("try_in_chat"), visible=False, elem_id="train-try-chat")
    ui.chart = gr.Plot(loss_figure([], t), label=t("chart_loss"), elem_id="train-chart")
    # Ticks itself once the loss spans more than a decade, unless the user has set it by hand.
    with gr.Row():
        ui.log_scale = gr.Checkbox(False, label=t("chart_log_scale"), elem_id="train-log-scale")
        ui.smoothing = gr.Checkbox(True, label=t("chart_smooth"), elem_id="train-smooth")
    ui.log_scale_by_hand = gr.State(False)
    with gr.Accordion(t("log_label"), open=False) as ui.log_accordion:
        ui.log = gr.Textbox(
            lines=12, max_lines=12, label=t("log_label"), show_label=False, autoscroll=True, elem_id="train-log"
        )
    with gr.Accordion(t("status_label"), open=False):
        ui.status_json = gr.JSON()
    # (run, metrics, state, log scale, smoothing) drawn: skip redrawing an unchanged chart
    ui.seen = gr.State(("", -1, "", False, True))
    ui.timer = gr.Timer(POLL_SECONDS)


def wire_form(ctx: UIContext, ui: SimpleNamespace, data: dict) -> None:
    """The form's own events: method and stage groups, learning-rate hints, the process plan, estimate, YAML."""
    fields, group_keys = ui.fields, [keys for keys, _ in ui.groups]
    ui.method_outputs = [group for _, group in ui.groups] + [fields["learning_rate"]]
    method_inputs = [fields["finetuning_type"], fields["model_name_or_path"], fields["stage"]]
    for trigger in (fields["finetuning_type"], fields["model_name_or_path"]):
        trigger.input(partial(h.method_changed, group_keys), method_inputs, ui.method_outputs, api_name=False)

    # A stage picked by hand brings its own learning rate (dpo steps are far smaller than sft's). `select` fires on
    # the user's click only: a stage set by the dataset (follow_data) comes with its rate already.
    def stage_picked(method: str, model: str, picked: gr.SelectData):
        return h.suggested_learning_rate(model, method, str(picked.value))

    fields["stage"].select(stage_picked, method_inputs[:2], fields["learning_rate"], api_name=False)
    fields["stage"].change(
        lambda stage: gr.update(visible=h.has_stage_fields(stage)), fields["stage"], ui.preference_group, api_name=False
    )
    ui.plan_inputs = [fields["nproc_per_node"], fields["distributed"], ui.nnodes, ui.master_addr]
    for component in ui.plan_inputs:
        component.change(
            partial(h.show_processes, ctx), ui.plan_inputs, ui.processes_plan, api_name=False, show_progress="hidden"
        )
    changed = partial(h.form_changed, ctx, ui.keys)
    for component in ui.form:
        component.change(changed, ui.form, [ui.estimate, ui.command], api_name=False, show_progress="hidden")
    ui.save_yaml_button.click(
        partial(h.save_config, ctx, ui.keys), ui.form, [ui.yaml_file, ui.message], api_name="save_config"
    )
    ui.load_yaml_button.upload(
        partial(h.load_config, ctx, ui.keys),
        ui.load_yaml_button,
        [fields[k] for k in ui.keys] + [data["dataset"], data["format"], data["columns"], ui.message],
        api_name="load_config",
    )


def wire_run(ctx: UIContext, ui: SimpleNamespace) -> None:
    """Start, Abort, Resume and the live view's timer."""
    ui.start.click(
        partial(h.start_training, ctx, ui.keys), ui.form, [ui.message, ui.refused_start], api_name="start_training"
    )
    ui.abort.click(partial(h.abort_training, ctx), None, ui.message, api_name="abort_training")
    ui.resume.click(partial(h.resume_training, ctx), None, ui.message, api_name="resume_training")
    ui.log_scale.input(lambda: True, None, ui.log_scale_by_hand, api_name=False)
    # A log opened while it was hidden would show its middle: opening it shows the newest lines.
    ui.log_accordion.expand(None, None, None, js=SCROLL_LOG_TO_END, api_name=False)
    ui.timer.tick(
        partial(h.poll, ctx),
        [ui.seen, ui.message, ui.refused_start, ui.log_scale, ui.log_scale_by_hand, ui.smoothing],
        [ui.progress, ui.chart, ui.log, ui.status_json, ui.seen, ui.abort, ui.resume, ui.message, ui.finished_run]
        + [ui.try_in_chat, ui.log_scale],
        api_name="poll",
        show_progress="hidden",
    )


def wire_data(ctx: UIContext, ui: SimpleNamespace, data: dict) -> None:
    """The dataset is one choice shared with the Data tab; the stage follows it."""
    t, fields = ctx.t, ui.fields
    for component in (data["dataset"], data["format"]):
        component.change(
            lambda ds, fmt: (t("train_dataset", dataset=Path(ds or "").name, format=fmt), gr.update(value=ds)),
            [data["dataset"], data["format"]],
            [ui.dataset_note, ui.dataset],
            api_name=False,
        )
    # Picked here: the Data tab follows (its table, sample and histogram show the same dataset).
    ui.dataset.input(
        lambda ds: (ds, 1, ""), ui.dataset, [data["dataset"], data["sample_index"], data["columns"]], api_name=False
    ).then(**data["preview"], api_name=False)
    data["dataset"].change(
        partial(h.follow_data, ctx),
        [data["dataset"], data["format"], data["columns"]]
        + [fields["model_name_or_path"], fields["finetuning_type"], fields["stage"]],
        [fields["stage"], fields["learning_rate"], ui.stage_note],
        api_name=False,
    )


def create_train_tab(ctx: UIContext, data: dict) -> dict:
    ui = SimpleNamespace(fields={})
    model_layout(ctx, ui)
    settings_layout(ctx, ui)
    run_layout(ctx, ui)
    fields = ui.fields
    ui.keys = list(fields)
    ui.form = [fields[k] for k in ui.keys] + [data["dataset"], data["format"], data["columns"], ui.continue_from]
    wire_form(ctx, ui, data)
    wire_run(ctx, ui)
    wire_data(ctx, ui, data)
    group_keys = [keys for keys, _ in ui.groups]
    return {
        "start": ui.start,
        "finished_run": ui.finished_run,
        "try_in_chat": ui.try_in_chat,
        "abort": ui.abort,
        "message": ui.message,
        "status": ui.status_json,
        "fields": fields,
        "refresh": (
            partial(h.refresh_choices, ctx),
            None,
            [ui.continue_from, fields["model_name_or_path"], fields["eval_dataset"], ui.dataset],
        ),
        "dataset": ui.dataset,
        "method_groups": (partial(h.method_groups, group_keys), fields["finetuning_type"], ui.method_outputs[:-1]),
        "restore": (
            partial(h.restore_running_form, ctx, ui.keys),
            None,
            [fields[k] for k in ui.keys] + [data["dataset"], data["format"], data["columns"]],
        ),
        "estimate": dict(fn=partial(h.show_estimate, ctx, ui.keys), inputs=ui.form, outputs=ui.estimate),
        "processes": dict(fn=partial(h.show_processes, ctx), inputs=ui.plan_inputs, outputs=ui.processes_plan),
        "command": dict(fn=partial(h.show_command, ctx, ui.keys), inputs=ui.form, outputs=ui.command),
    }

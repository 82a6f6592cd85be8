"""Train tab handlers: plain functions of the form's values that return the updates. Each goes through
`webui.context.handler`, so a failure reaches the page the same way; train_layout.py wires them. `keys` is the
form's own fields in order (the RunConfig keys the layout made components for)."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from core.config import RunConfig, command_line, load_yaml_with_notes
from core.errors import BusyError
from core.methods import METHODS, get_method
from core.stages import STAGES, SUPERVISED, get_stage, is_preference
from core.suggest import learning_rate_for
from webui.charts import loss_figure, wants_log_scale
from webui.context import UIContext, handler
from webui.formatting import format_duration
from webui.tabs.data_handlers import dataset_options

# The form's defaults suit the tiny demo model: it learns the identity set in well under a minute.
DEMO_DEFAULTS = RunConfig(learning_rate=4e-3, num_train_epochs=5, cutoff_len=512, prefix_projection=True)
ENDED = ("finished", "failed", "aborted", "interrupted")


def suggested_learning_rate(model: str, method: str, stage: str = SUPERVISED) -> float:
    """Each method's (or preference stage's) suggestion: the random demo model needs large steps, real models
    small ones (core/suggest.py)."""
    return learning_rate_for(stage or SUPERVISED, model or "", method)


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
    if state in ENDED:
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


def form_config(ctx: UIContext, keys: list[str], *values) -> RunConfig:
    *own, dataset, fmt, columns, parent = values
    config = DEMO_DEFAULTS.replace(**dict(zip(keys, own)), dataset=dataset, dataset_format=fmt, columns=columns or "")
    return ctx.wb.continued_config(parent, config) if parent else config


def _message(ctx: UIContext, reason: str, *_) -> str:
    return ctx.error_line(reason)


@handler(lambda ctx, reason, *_: (ctx.error_line(reason), True))
def start_training(ctx: UIContext, keys: list[str], *values):
    """The message, and whether the progress below should step aside (a refused Start trained nothing, so
    the previous run's bar must not sit under the error as if it belonged to it)."""
    try:
        run = ctx.wb.start_training(form_config(ctx, keys, *values).validate())
    except BusyError as exc:
        return ctx.t("busy", run=exc.run), False
    return ctx.t("started", run=run), False


@handler(_message)
def resume_training(ctx: UIContext):
    run = ctx.wb.current_run_name()
    try:
        ctx.wb.resume_training(run or "")
    except BusyError as exc:
        return ctx.t("busy", run=exc.run)
    return ctx.t("resumed", run=run)


@handler(_message)
def abort_training(ctx: UIContext):
    running = ctx.wb.training_run()
    if running is None or not ctx.wb.abort_training():
        return ctx.t("nothing_running")
    return ctx.t("aborting", run=running)


@handler(lambda ctx, reason, *_: ctx.t("estimate_unavailable", reason=reason))  # an estimate never breaks the form
def show_estimate(ctx: UIContext, keys: list[str], *values) -> str:
    t = ctx.t
    result, device = ctx.wb.estimate(form_config(ctx, keys, *values))
    parts = result.parts_gib()
    text = t("estimate_text", **parts, trainable=f"{result.trainable_params:,}", params=f"{result.total_params:,}")
    if device is None:
        return f"{text} · {t('estimate_no_gpu')}"
    name, memory = device
    key = "estimate_exceeds" if result.total > memory else "estimate_fits"
    return f"{text} · {t(key, device=name, memory=round(memory / 2**30, 1))}"


@handler(lambda ctx, reason, *_: f"# {reason}")
def show_command(ctx: UIContext, keys: list[str], *values) -> str:
    return command_line(form_config(ctx, keys, *values))


def form_changed(ctx: UIContext, keys: list[str], *values) -> tuple[str, str]:
    return show_estimate(ctx, keys, *values), show_command(ctx, keys, *values)


@handler(lambda ctx, reason, *_: (None, ctx.error_line(reason)))
def save_config(ctx: UIContext, keys: list[str], *values):
    return ctx.wb.save_config(form_config(ctx, keys, *values)), ""


@handler(lambda ctx, reason, keys, *_: [gr.skip()] * (len(keys) + 3) + [ctx.error_line(reason)])
def load_config(ctx: UIContext, keys: list[str], file_path: str):
    """Fill the form from a YAML file (ours or LLaMA-Factory's); notes say what was ignored."""
    config, notes = load_yaml_with_notes(file_path)
    config.validate()  # a value the form cannot show (an unknown template, say) is named, not loaded
    values = config.to_dict()
    text = ctx.t("yaml_loaded", file=Path(file_path).name) + "".join(f"\n\n{n}" for n in notes)
    return [values[k] for k in keys] + [config.dataset, config.dataset_format, config.columns, text]


def buttons_for(state: str | None, settings_failed: bool = False):
    """Abort and Resume are clickable only when they have something to act on (a run that failed on its own
    settings would fail the same way again). Start stays clickable: from a second tab it answers 'busy' with
    the running run's name."""
    return (
        gr.update(interactive=state in ("queued", "running")),
        gr.update(interactive=state in ("aborted", "failed", "interrupted") and not settings_failed),
    )


def _idle(ctx: UIContext, snapshot, drawn) -> tuple:
    """No run to show (or this page's Start was refused): an empty view."""
    if snapshot is None:
        idle = progress_html(None, ctx)
    else:
        idle = f"<div class='gw-progress-text'>{ctx.t('progress_refused')}</div>"
    blank = ("", -1, "", False, True)
    empty = loss_figure([], ctx.t) if tuple(drawn) != blank else gr.skip()
    hidden = gr.update(visible=False)
    return idle, empty, gr.skip(), {}, blank, *buttons_for(None), gr.skip(), gr.skip(), hidden, gr.skip()


# A poll that fails says so in the message box and leaves the rest of the view as it was.
@handler(lambda ctx, reason, *_: (*[gr.skip()] * 7, ctx.error_line(reason), *[gr.skip()] * 3))
def poll(ctx: UIContext, drawn, shown_message: str, refused: bool, log_now: bool, log_by_hand: bool, smooth=True):
    t = ctx.t
    snapshot = ctx.wb.snapshot(ctx.wb.current_run_name())
    if snapshot is None or (refused and snapshot.state not in ("queued", "running")):
        return _idle(ctx, snapshot, drawn)
    use_log = log_now if log_by_hand else wants_log_scale(snapshot.metrics)
    key = (snapshot.name, len(snapshot.metrics), snapshot.state, use_log, bool(smooth))
    figure = gr.skip() if key == tuple(drawn) else loss_figure(snapshot.metrics, t, use_log, bool(smooth))
    # A "stopping…" or "resumed" notice is stale once the run has reached an end state.
    stale = (t("aborting", run=snapshot.name), t("resumed", run=snapshot.name))
    message_update = "" if snapshot.state in ENDED and (shown_message or "") in stale else gr.skip()
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


def method_groups(group_keys: list[frozenset], method: str) -> list:
    """Only the chosen method's own fields are visible."""
    wanted = set(get_method(method).keys) if method in METHODS else set()
    return [gr.update(visible=bool(keys & wanted)) for keys in group_keys]


def method_changed(group_keys: list[frozenset], method: str, model: str, stage: str = SUPERVISED):
    """Show only the chosen method's fields, and suggest a learning rate that suits it (and the stage)."""
    return (*method_groups(group_keys, method), suggested_learning_rate(model, method, stage))


@handler(lambda ctx, reason, *_: reason)  # a hint never breaks the form
def show_processes(ctx: UIContext, nproc, distributed, machines, address) -> str:
    t = ctx.t
    plan, intro, commands = ctx.wb.process_plan(nproc or 1, distributed, machines or 1, address or "")
    if not commands:
        return t.message(plan)
    listing = "\n".join(f"# node {rank}\n{command}" for rank, command in enumerate(commands))
    return f"{t.message(plan)}\n\n{t.message(intro)}\n\n```bash\n{listing}\n```"


@handler(lambda ctx, reason, *_: (gr.skip(), gr.skip(), ctx.error_line(reason)))
def follow_data(ctx: UIContext, ds: str, fmt: str, columns: str, model: str, method: str, stage: str):
    """Pairwise data trains a preference stage, other data sft, each with its own learning rate. A stage
    that already fits the data (orpo on pairs, say) is left as the user set it."""
    suggested = ctx.wb.suggest_stage(ds or "", fmt or "auto", columns or "", model or "", method or "lora")
    if suggested is None or is_preference(suggested[0]) == is_preference(stage):
        return gr.skip(), gr.skip(), ""
    new_stage, rate = suggested
    key = "stage_follows_data" if is_preference(new_stage) else "stage_follows_sft"
    return new_stage, rate, ctx.t(key, dataset=Path(ds).name, stage=new_stage, rate=f"{rate:g}")


@handler(lambda ctx, reason, keys, *_: [gr.skip()] * (len(keys) + 3))
def restore_running_form(ctx: UIContext, keys: list[str]):
    """After a refresh or in a new tab, the form shows the settings of the run that is training."""
    running = ctx.wb.training_config()
    if running is None:
        return [gr.skip()] * (len(keys) + 3)
    values = running.to_dict()
    return [values[k] for k in keys] + [running.dataset, running.dataset_format, running.columns]


def refresh_choices(ctx: UIContext):
    t = ctx.t
    finished = [run.name for run in ctx.wb.runs() if run.state == "finished"]
    return (
        gr.update(choices=[(t("continue_none"), "")] + [(r, r) for r in finished]),
        gr.update(choices=ctx.wb.base_model_choices()),
        gr.update(choices=[("", "")] + dataset_options(ctx)),
        gr.update(choices=dataset_options(ctx)),
    )

"""Evaluate tab: a run and a dataset -> loss, perplexity, BLEU-4 and ROUGE, and every prediction; and the arena,
where two runs answer the same prompts and the person judges them blind. This module lays the tab out and wires
its events; what the events do is in evaluate_handlers.py."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from webui.context import UIContext
from webui.tabs import evaluate_handlers as h


def evaluation_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    t = ctx.t
    gr.Markdown(t("eval_info"))
    with gr.Row():
        # Runs and uploads are listed when the tab opens: nothing of the workspace is in the page before login.
        ui.run = gr.Dropdown([], value=None, label=t("eval_run"), allow_custom_value=True, scale=3)
        ui.dataset = gr.Dropdown(
            [("identity", "identity")], value="identity", label=t("eval_data_label"), allow_custom_value=True, scale=3
        )
        ui.max_samples = gr.Number(
            20, label=t("eval_max_samples"), precision=0, minimum=0, scale=1, elem_id="eval-samples"
        )
    ui.data_note = gr.Markdown(elem_id="eval-data-note")
    with gr.Row():
        ui.max_new_tokens = gr.Slider(8, 1024, 128, step=8, label=t("max_new_tokens"))
        ui.greedy = gr.Checkbox(True, label=t("greedy"))
        ui.temperature = gr.Slider(0.05, 2, 0.7, step=0.05, label=t("temperature"))
    with gr.Row():
        ui.start = gr.Button(t("eval_start"), variant="primary", elem_id="eval-start")
        ui.abort = gr.Button(t("eval_abort"), variant="stop", interactive=False, elem_id="eval-abort")
    ui.notice = gr.Markdown(elem_id="eval-notice")
    with gr.Column(visible=False) as ui.results:  # shown once an evaluation has results
        ui.metrics = gr.Dataframe(label=t("eval_metrics"), interactive=False, elem_id="eval-metrics")
        ui.predictions = gr.Dataframe(
            label=t("eval_predictions"),
            interactive=False,
            wrap=True,
            max_height=480,
            column_widths=["30%", "30%", "40%"],
            elem_id="eval-predictions",
        )


def create_evaluate_tab(ctx: UIContext) -> dict:
    ui = SimpleNamespace()
    evaluation_layout(ctx, ui)
    arena = create_arena(ctx, ui.start, ui.abort)
    ui.start.click(lambda: h.busy(True), None, [ui.start, ui.abort], api_name=False).then(
        partial(h.evaluate, ctx),
        [ui.run, ui.dataset, ui.max_samples, ui.max_new_tokens, ui.greedy, ui.temperature],
        [ui.notice, ui.metrics, ui.predictions, ui.results],
        api_name="evaluate",
    ).then(lambda: h.busy(False), None, [ui.start, ui.abort], api_name=False)
    ui.abort.click(partial(h.abort_evaluation, ctx), None, ui.notice, api_name="abort_evaluation")
    ui.run.change(partial(h.own_data, ctx), ui.run, [ui.dataset, ui.data_note], api_name=False)
    ui.dataset.input(partial(h.data_line, ctx), [ui.run, ui.dataset], ui.data_note, api_name=False)
    arena_refresh, arena_inputs, arena_outputs = arena["refresh"]

    def refresh_all(current, shown, *arena_now):
        return (*h.refresh(ctx, current, shown), *arena_refresh(*arena_now))

    return {
        "refresh": (refresh_all, [ui.run, ui.notice, *arena_inputs], [ui.run, ui.dataset, ui.notice, *arena_outputs]),
        "run": ui.run,
    }


def arena_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    t = ctx.t
    with gr.Accordion(t("arena_title"), open=False):
        gr.Markdown(t("arena_info"))
        with gr.Row():
            ui.first = gr.Dropdown(
                [], value=None, label=t("arena_first"), allow_custom_value=True, elem_id="arena-first"
            )
            ui.second = gr.Dropdown(
                [(t("arena_base"), "")],
                value="",
                label=t("arena_second"),
                allow_custom_value=True,
                elem_id="arena-second",
            )
            ui.dataset = gr.Dropdown(
                [("identity", "identity")],
                value="identity",
                label=t("eval_data_label"),
                allow_custom_value=True,
                elem_id="arena-dataset",
            )
            ui.samples = gr.Number(10, label=t("eval_max_samples"), precision=0, minimum=0, elem_id="arena-samples")
        ui.data_note = gr.Markdown(elem_id="arena-data-note")
        with gr.Row():
            ui.start = gr.Button(t("arena_start"), variant="primary", elem_id="arena-start")
            ui.earlier = gr.Dropdown(
                [], value=None, label=t("arena_open"), allow_custom_value=True, elem_id="arena-open"
            )
        ui.status = gr.Markdown(elem_id="arena-status")
        ui.prompt = gr.Markdown(elem_id="arena-prompt")
        with gr.Row():
            ui.left = gr.Markdown(label=t("arena_left"), show_label=True, container=True, elem_id="arena-left")
            ui.right = gr.Markdown(label=t("arena_right"), show_label=True, container=True, elem_id="arena-right")
        with gr.Row():
            ui.left_better = gr.Button(t("arena_left_better"), interactive=False, elem_id="arena-left-better")
            ui.tie = gr.Button(t("arena_tie"), interactive=False, elem_id="arena-tie")
            ui.right_better = gr.Button(t("arena_right_better"), interactive=False, elem_id="arena-right-better")
        with gr.Row():
            ui.previous = gr.Button(t("arena_previous"), size="sm", elem_id="arena-previous")
            ui.following = gr.Button(t("arena_next"), size="sm", elem_id="arena-next")
            ui.reveal = gr.Button(t("arena_reveal"), size="sm", elem_id="arena-reveal")
            ui.auto = gr.Button(t("arena_auto"), size="sm", elem_id="arena-auto")
        ui.result = gr.Markdown(elem_id="arena-result")
    ui.where = gr.State(None)  # {"run", "id", "index"}: the arena and item shown


def create_arena(ctx: UIContext, eval_start: gr.Button, abort: gr.Button) -> dict:
    """Two runs (or a run and its base model) answer a dataset's prompts; the person judges each pair blind (the
    sides are shuffled per prompt), then the names and the win rate are shown. Kept in the first run's folder."""
    ui = SimpleNamespace()
    arena_layout(ctx, ui)
    shown = [ui.status, ui.prompt, ui.left, ui.right, ui.left_better, ui.tie, ui.right_better, ui.result, ui.where]
    # While both models answer, the tab's Abort stops them (the items both answered are kept) and Start waits.
    buttons = [ui.start, eval_start, abort]
    ui.start.click(
        lambda: (gr.update(interactive=False), gr.update(interactive=False), gr.update(interactive=True)),
        None,
        buttons,
        api_name=False,
    ).then(
        partial(h.start_arena, ctx),
        [ui.first, ui.second, ui.dataset, ui.samples],
        [*shown, ui.earlier],
        api_name="arena_start",
    ).then(
        lambda: (gr.update(interactive=True), gr.update(interactive=True), gr.update(interactive=False)),
        None,
        buttons,
        api_name=False,
    )
    ui.earlier.input(partial(h.open_arena, ctx), [ui.first, ui.earlier], shown, api_name=False)
    ui.first.change(partial(h.own_data, ctx), ui.first, [ui.dataset, ui.data_note], api_name=False)
    ui.dataset.input(partial(h.data_line, ctx), [ui.first, ui.dataset], ui.data_note, api_name=False)
    ui.first.input(
        lambda run: gr.update(choices=h.arena_choices(ctx, run), value=None), ui.first, ui.earlier, api_name=False
    )
    ui.previous.click(lambda place: h.move(ctx, place, -1), ui.where, shown, api_name=False)
    ui.following.click(lambda place: h.move(ctx, place, 1), ui.where, shown, api_name=False)
    judged_outputs = [*shown, ui.earlier]
    for button, verdict in ((ui.left_better, "left"), (ui.right_better, "right"), (ui.tie, "tie")):
        button.click(
            lambda place, verdict=verdict: h.with_list(ctx, place, h.judge(ctx, place, verdict)),
            ui.where,
            judged_outputs,
            api_name=False,
        )
    for button, action in ((ui.reveal, ctx.wb.arena_reveal), (ui.auto, ctx.wb.arena_auto_judge)):
        button.click(
            lambda place, action=action: h.with_list(ctx, place, h.act(ctx, place, action)),
            ui.where,
            judged_outputs,
            api_name=False,
        )
    refresh = partial(h.arena_refresh, ctx)
    return {"refresh": (refresh, [ui.first, ui.second], [ui.first, ui.second, ui.dataset, ui.earlier])}

"""Evaluate tab: a run and a dataset -> loss, perplexity, BLEU-4 and ROUGE, and every prediction."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from core.chat.turns import reply_from_markup
from core.evaluation.arena import BASE
from core.evaluation.evaluate import EvalSettings
from webui.context import UIContext
from webui.formatting import reply_markdown
from webui.tabs.data import dataset_options


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
    data_note = gr.Markdown(elem_id="eval-data-note")
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

    arena = create_arena(ctx, start, abort)

    def evaluate(run_name, dataset_name, samples, new_tokens, greedy_, temperature_):
        settings = EvalSettings(
            max_samples=int(samples or 0),
            max_new_tokens=int(new_tokens),
            greedy=bool(greedy_),
            temperature=float(temperature_),
        )
        if run_name:  # generating takes a while: the page says what it is doing at once
            yield (
                t("eval_running", run=run_name, dataset=Path(dataset_name or "").name),
                gr.skip(),
                gr.skip(),
                gr.skip(),
            )
        try:
            result = ctx.wb.evaluate(run_name or "", dataset_name, settings=settings)
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            yield ctx.error(exc), gr.skip(), gr.skip(), gr.update(visible=False)
            return
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
        # A model that thinks: its reasoning beside the prediction (scored without it).
        reasoning = ["reasoning"] if any("reasoning" in p for p in result.predictions) else []
        rows = pd.DataFrame(result.predictions, columns=["prompt", "label", "prediction", *reasoning])
        rows = rows.rename(columns={c: t(f"eval_col_{c}") for c in rows.columns})
        yield note, pd.DataFrame([shown]), rows, gr.update(visible=True)

    def abort_evaluation():
        return t("eval_aborting") if ctx.wb.abort_evaluation() else t("eval_nothing_running")

    def refresh(current: str | None, shown: str):
        """Lists read afresh; with nothing to evaluate, say what to do instead of an empty table."""
        runs = ctx.wb.runs_with_results()
        hint = t("eval_empty")
        note = hint if not runs else ("" if shown == hint else gr.skip())
        return (
            gr.update(choices=runs, value=current if current in runs else (runs[0] if runs else None)),
            gr.update(choices=dataset_options(ctx)),
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
    run.change(lambda name: own_data(ctx, name), run, [dataset, data_note], api_name=False)
    dataset.input(lambda name, chosen: data_line(ctx, name, chosen), [run, dataset], data_note, api_name=False)
    arena_refresh, arena_inputs, arena_outputs = arena["refresh"]

    def refresh_all(current, shown, *arena_now):
        return (*refresh(current, shown), *arena_refresh(*arena_now))

    return {
        "refresh": (refresh_all, [run, notice, *arena_inputs], [run, dataset, notice, *arena_outputs]),
        "run": run,
    }


def own_data(ctx: UIContext, run: str | None):
    """A run chosen: its own eval data when it trained with some, else its training data, and the line that
    says which of the two is scored."""
    if not run:
        return gr.skip(), ""
    trained, held_out = ctx.wb.run_datasets(run)
    chosen = held_out or trained or "identity"
    return gr.update(value=chosen), data_line(ctx, run, chosen)


def data_line(ctx: UIContext, run: str | None, dataset: str | None) -> str:
    """Whether `dataset` is the run's held-out data or the data it trained on (scores that look too good)."""
    if not (run and dataset):
        return ""
    trained, held_out = ctx.wb.run_datasets(run)
    name = Path(dataset).name
    if held_out and dataset == held_out:
        return ctx.t("eval_own_split", run=run, dataset=name)
    if dataset == trained:
        return ctx.t("eval_training_data", run=run, dataset=name)
    return ""


def contestant(name: str | None, t) -> str:
    """A contestant's name as the page shows it: a run's name, or the base model in the page's language."""
    return t("arena_base") if name in (None, BASE) else name


def score_lines(view, t) -> list[str]:
    """Each judge's result for the first contestant: win rate (a tie counts half) with its 95% Wilson interval.
    The person's verdicts are scored once the names are shown, so judging stays blind."""
    lines = []
    for judge, found in view.scores.items():
        if judge == "person" and not view.revealed:
            continue
        if not found.get("judged"):
            continue
        lines.append(
            t(
                "arena_score",
                judge=t("arena_judge_person") if judge == "person" else t("arena_judge_rouge"),
                first=contestant(view.first, t) if view.first else t("arena_first_hidden"),
                second=contestant(view.second, t) if view.revealed else t("arena_second_hidden"),
                rate=f"{100 * found['win_rate']:.0f}%",
                low=f"{100 * found['low']:.0f}%",
                high=f"{100 * found['high']:.0f}%",
                wins=found["wins"],
                losses=found["losses"],
                ties=found["ties"],
                judged=found["judged"],
            )
        )
    return lines


def create_arena(ctx: UIContext, eval_start: gr.Button, abort: gr.Button) -> dict:
    """Two runs (or a run and its base model) answer a dataset's prompts; the person judges each pair blind (the
    sides are shuffled per prompt), then the names and the win rate are shown. Kept in the first run's folder."""
    t = ctx.t
    with gr.Accordion(t("arena_title"), open=False):
        gr.Markdown(t("arena_info"))
        with gr.Row():
            first = gr.Dropdown([], value=None, label=t("arena_first"), allow_custom_value=True, elem_id="arena-first")
            second = gr.Dropdown(
                [(t("arena_base"), "")],
                value="",
                label=t("arena_second"),
                allow_custom_value=True,
                elem_id="arena-second",
            )
            dataset = gr.Dropdown(
                [("identity", "identity")],
                value="identity",
                label=t("eval_data_label"),
                allow_custom_value=True,
                elem_id="arena-dataset",
            )
            samples = gr.Number(10, label=t("eval_max_samples"), precision=0, minimum=0, elem_id="arena-samples")
        data_note = gr.Markdown(elem_id="arena-data-note")
        with gr.Row():
            start = gr.Button(t("arena_start"), variant="primary", elem_id="arena-start")
            earlier = gr.Dropdown([], value=None, label=t("arena_open"), allow_custom_value=True, elem_id="arena-open")
        status = gr.Markdown(elem_id="arena-status")
        prompt = gr.Markdown(elem_id="arena-prompt")
        with gr.Row():
            left = gr.Markdown(label=t("arena_left"), show_label=True, container=True, elem_id="arena-left")
            right = gr.Markdown(label=t("arena_right"), show_label=True, container=True, elem_id="arena-right")
        with gr.Row():
            left_better = gr.Button(t("arena_left_better"), interactive=False, elem_id="arena-left-better")
            tie = gr.Button(t("arena_tie"), interactive=False, elem_id="arena-tie")
            right_better = gr.Button(t("arena_right_better"), interactive=False, elem_id="arena-right-better")
        with gr.Row():
            previous = gr.Button(t("arena_previous"), size="sm", elem_id="arena-previous")
            following = gr.Button(t("arena_next"), size="sm", elem_id="arena-next")
            reveal = gr.Button(t("arena_reveal"), size="sm", elem_id="arena-reveal")
            auto = gr.Button(t("arena_auto"), size="sm", elem_id="arena-auto")
        result = gr.Markdown(elem_id="arena-result")
    where = gr.State(None)  # {"run", "id", "index"}: the arena and item shown

    shown = [status, prompt, left, right, left_better, tie, right_better, result, where]

    def show(view, index: int):
        """The page for item `index` of an arena view."""
        index = min(max(index, 0), max(view.total - 1, 0))
        item = view.items[index] if view.items else None
        judged = t("arena_status", arena=view.id, judged=view.judged, total=view.total, item=index + 1)
        if view.revealed:
            judged += " · " + t("arena_revealed")
        rouge_judged = sum(1 for entry in view.items if entry.rouge_l is not None)
        if rouge_judged:
            judged += " · " + t("arena_rouge_status", judged=rouge_judged, total=view.total)
        text = ""
        if item is not None:
            question = item.prompt[-1]["content"] if item.prompt else ""
            text = t("arena_question", question=question)
            if item.reference:
                text += "\n\n" + t("arena_reference", reference=item.reference)
            if item.verdict:
                text += "\n\n" + t("arena_your_verdict", verdict=t(f"arena_verdict_{item.verdict}"))

        def side(answer: str, name: str | None, rouge: float | None) -> str:
            heading = f"**{contestant(name, t)}**\n\n" if view.revealed else ""
            note = f"\n\n*ROUGE-L {rouge:.1f}*" if rouge is not None else ""
            return heading + reply_markdown(reply_from_markup(answer or ""), t) + note  # reasoning on demand

        open_ = item is not None and not view.revealed
        rouge = item.rouge_l if item is not None else None
        return (
            judged,
            text,
            side(item.left, item.left_name, rouge[0] if rouge else None) if item else "",
            side(item.right, item.right_name, rouge[1] if rouge else None) if item else "",
            *[gr.update(interactive=open_)] * 3,
            "\n\n".join(score_lines(view, t)),
            {"run": view.run, "id": view.id, "index": index},
        )

    def failed(exc: Exception):
        return (ctx.error(exc), *[gr.skip()] * (len(shown) - 1))

    def start_arena(first_run, second_run, dataset_name, count):
        from core.evaluation.arena import ArenaSettings

        if not first_run:
            yield t("arena_pick_run"), *[gr.skip()] * len(shown)
            return
        # Both models generate for a minute or more: the page says so at once, and the old answers step aside.
        yield t("arena_generating", count=int(count or 0) or "…"), "", "", "", *[gr.skip()] * (len(shown) - 3)
        try:
            view = ctx.wb.arena_start(
                first_run, dataset_name, second_run or "", settings=ArenaSettings(max_samples=int(count or 0))
            )
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            yield *failed(exc), gr.skip()
            return
        yield *show(view, 0), gr.update(choices=arena_choices(first_run), value=view.id)

    def arena_choices(run: str | None) -> list[tuple[str, str]]:
        if not run:
            return []
        try:
            found = ctx.wb.arenas(run)
        except Exception:  # noqa: BLE001 - a run without arenas (or gone) offers none
            return []
        return [
            (
                t("arena_choice", arena=a["id"], dataset=Path(a["dataset"]).name, judged=a["judged"], total=a["total"]),
                a["id"],
            )
            for a in found
        ]

    def open_arena(run, arena_id):
        if not (run and arena_id):
            return tuple(gr.skip() for _ in shown)
        try:
            return show(ctx.wb.arena_view(run, arena_id), 0)
        except Exception as exc:  # noqa: BLE001
            return failed(exc)

    def move(place, step: int):
        if not place:
            return tuple(gr.skip() for _ in shown)
        try:
            return show(ctx.wb.arena_view(place["run"], place["id"]), place["index"] + step)
        except Exception as exc:  # noqa: BLE001
            return failed(exc)

    def judge(place, verdict: str):
        """Record the verdict on the shown item, then show the next item still to judge (or this one, if none)."""
        if not place:
            return tuple(gr.skip() for _ in shown)
        try:
            view = ctx.wb.arena_judge(place["run"], place["id"], place["index"], verdict)
        except Exception as exc:  # noqa: BLE001
            return failed(exc)
        waiting = [item.index for item in view.items if item.verdict is None]
        later = [i for i in waiting if i > place["index"]] or waiting or [place["index"]]
        return show(view, later[0])

    def act(place, action):
        if not place:
            return tuple(gr.skip() for _ in shown)
        try:
            view = action(place["run"], place["id"])
        except Exception as exc:  # noqa: BLE001
            return failed(exc)
        return show(view, place["index"])

    # While both models answer, the tab's Abort stops them (the items both answered are kept) and Start waits.
    buttons = [start, eval_start, abort]
    start.click(
        lambda: (gr.update(interactive=False), gr.update(interactive=False), gr.update(interactive=True)),
        None,
        buttons,
        api_name=False,
    ).then(start_arena, [first, second, dataset, samples], [*shown, earlier], api_name="arena_start").then(
        lambda: (gr.update(interactive=True), gr.update(interactive=True), gr.update(interactive=False)),
        None,
        buttons,
        api_name=False,
    )
    earlier.input(open_arena, [first, earlier], shown, api_name=False)
    first.change(lambda name: own_data(ctx, name), first, [dataset, data_note], api_name=False)
    dataset.input(lambda name, chosen: data_line(ctx, name, chosen), [first, dataset], data_note, api_name=False)
    first.input(lambda run: gr.update(choices=arena_choices(run), value=None), first, earlier, api_name=False)
    previous.click(lambda place: move(place, -1), where, shown, api_name=False)
    following.click(lambda place: move(place, 1), where, shown, api_name=False)

    def with_list(place, result):
        """A verdict changes the arena's counts: the list of earlier arenas shows them too."""
        listed = gr.update(choices=arena_choices(place["run"])) if place else gr.skip()
        return (*result, listed)

    judged_outputs = [*shown, earlier]
    for button, verdict in ((left_better, "left"), (right_better, "right"), (tie, "tie")):
        button.click(
            lambda place, verdict=verdict: with_list(place, judge(place, verdict)),
            where,
            judged_outputs,
            api_name=False,
        )
    reveal.click(lambda place: with_list(place, act(place, ctx.wb.arena_reveal)), where, judged_outputs, api_name=False)
    auto.click(
        lambda place: with_list(place, act(place, ctx.wb.arena_auto_judge)), where, judged_outputs, api_name=False
    )

    def refresh(current_first, current_second):
        runs = ctx.wb.runs_with_results()
        picked = current_first if current_first in runs else (runs[0] if runs else None)
        return (
            gr.update(choices=runs, value=picked),
            gr.update(
                choices=[(t("arena_base"), ""), *[(r, r) for r in runs]],
                value=current_second if current_second in ("", *runs) else "",
            ),
            gr.update(choices=dataset_options(ctx)),
            gr.update(choices=arena_choices(picked)),
        )

    return {"refresh": (refresh, [first, second], [first, second, dataset, earlier])}

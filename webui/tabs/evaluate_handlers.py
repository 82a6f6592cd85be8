"""Evaluate tab handlers: the evaluation and the arena, as plain functions of the page's values that return the
updates. Each goes through `webui.context.handler`; evaluate_layout.py wires them."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from core.chat.turns import reply_from_markup
from core.data.formats import IMAGE_PLACEHOLDER
from core.data.images import thumbnail_uri
from core.errors import WorkbenchError
from core.evaluation.arena import BASE, ArenaSettings
from core.evaluation.evaluate import EvalSettings
from core.runs import HELD_OUT_FILE
from webui.context import UIContext, handler
from webui.formatting import TEXT_CHARS, clip_cell, reply_markdown
from webui.tabs.data_handlers import dataset_options

# The arena's page: status, prompt, left, right, the three verdict buttons, the result and where it is.
SHOWN = 9


def busy(running: bool):
    """While an evaluation runs, Abort can act and Start waits; otherwise the other way round."""
    return gr.update(interactive=not running), gr.update(interactive=running)


@handler(lambda ctx, reason, *_: (ctx.error_line(reason), gr.skip(), gr.skip(), gr.update(visible=False)))
def evaluate(ctx: UIContext, run_name, dataset_name, samples, new_tokens, greedy_, temperature_):
    t = ctx.t
    settings = EvalSettings(
        max_samples=int(samples or 0),
        max_new_tokens=int(new_tokens),
        greedy=bool(greedy_),
        temperature=float(temperature_),
    )
    if run_name:  # generating takes a while: the page says what it is doing at once
        running = t("eval_running", run=run_name, dataset=Path(dataset_name or "").name)
        yield running, gr.skip(), gr.skip(), gr.skip()
    result = ctx.wb.evaluate(run_name or "", dataset_name, settings=settings)
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
    yield note, pd.DataFrame([shown]), prediction_table(result.predictions, t), gr.update(visible=True)


def prediction_table(predictions: list[dict], t) -> pd.DataFrame:
    """Prompt, label, prediction (and a thinking model's reasoning, scored without it) per sample, each cell
    clipped: a 1M-token prompt must not reach the page whole."""
    reasoning = ["reasoning"] if any("reasoning" in p for p in predictions) else []
    rows = pd.DataFrame(predictions, columns=["prompt", "label", "prediction", *reasoning])
    more = t.strings["cell_clipped"]
    rows = rows.map(lambda value: clip_cell(value, more) if isinstance(value, str) else value)
    return rows.rename(columns={c: t(f"eval_col_{c}") for c in rows.columns})


@handler(lambda ctx, reason, *_: ctx.error_line(reason))
def abort_evaluation(ctx: UIContext):
    return ctx.t("eval_aborting") if ctx.wb.abort_evaluation() else ctx.t("eval_nothing_running")


def refresh(ctx: UIContext, current: str | None, shown: str):
    """Lists read afresh; with nothing to evaluate, say what to do instead of an empty table."""
    runs = ctx.wb.runs_with_results()
    hint = ctx.t("eval_empty")
    note = hint if not runs else ("" if shown == hint else gr.skip())
    run = current if current in runs else (runs[0] if runs else None)
    return gr.update(choices=runs, value=run), gr.update(choices=data_choices(ctx, run)), note


def data_choices(ctx: UIContext, run: str | None, held_out: str | None = None) -> list[tuple[str, str]]:
    """The datasets to score, and first the rows the run's val_size held out, by name (never their path).
    `held_out`: the run's, where the caller has read it already."""
    if run and held_out is None:
        held_out = ctx.wb.run_datasets(run)[1]
    options = dataset_options(ctx)
    if run and Path(held_out or "").name == HELD_OUT_FILE:
        options = [(ctx.t("eval_held_out_choice", run=run), held_out)] + options
    return options


def own_data(ctx: UIContext, run: str | None):
    """A run chosen: its own held-out data when it has some (its eval dataset, or the rows its val_size kept out),
    else its training data, and the line that says which of the two is scored."""
    if not run:
        return gr.skip(), ""
    trained, held_out = ctx.wb.run_datasets(run)
    chosen = held_out or trained or "identity"
    return gr.update(choices=data_choices(ctx, run, held_out), value=chosen), data_line(ctx, run, chosen)


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


def show(ctx: UIContext, view, index: int):
    """The page for item `index` of an arena view."""
    t = ctx.t
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
        if item.images:  # the images are shown below, not as `<image>` markup
            question = question.replace(IMAGE_PLACEHOLDER, "").strip()
        more = t.strings["cell_clipped"]  # a 1M-token prompt or reference must not reach the page whole
        text = t("arena_question", question=clip_cell(question, more, TEXT_CHARS))
        pictures = [thumbnail_uri(image) for image in item.images]
        if pictures:  # what both contestants saw
            text += "\n\n" + " ".join(
                f"<img src='{uri}' alt='{t('arena_image', number=n)}' class='gw-arena-image'>"
                if uri
                else t("arena_image_gone", number=n)
                for n, uri in enumerate(pictures, 1)
            )
        if item.reference:
            text += "\n\n" + t("arena_reference", reference=clip_cell(item.reference, more, TEXT_CHARS))
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


def _failed(ctx: UIContext, reason: str, *_):
    """The arena's page with the failure in its status line, the rest as it was."""
    return (ctx.error_line(reason), *[gr.skip()] * (SHOWN - 1))


def _unchanged() -> tuple:
    return tuple(gr.skip() for _ in range(SHOWN))


@handler(lambda ctx, reason, *_: (*_failed(ctx, reason), gr.skip()))
def start_arena(ctx: UIContext, first_run, second_run, dataset_name, count):
    t = ctx.t
    if not first_run:
        yield t("arena_pick_run"), *[gr.skip()] * SHOWN
        return
    # Both models generate for a minute or more: the page says so at once, and the old answers step aside.
    yield t("arena_generating", count=int(count or 0) or "…"), "", "", "", *[gr.skip()] * (SHOWN - 3)
    settings = ArenaSettings(max_samples=int(count or 0))
    view = ctx.wb.arena_start(first_run, dataset_name, second_run or "", settings=settings)
    yield *show(ctx, view, 0), gr.update(choices=arena_choices(ctx, first_run), value=view.id)


def arena_choices(ctx: UIContext, run: str | None) -> list[tuple[str, str]]:
    if not run:
        return []
    try:
        found = ctx.wb.arenas(run)
    except WorkbenchError:  # a run gone meanwhile offers none (anything else is a bug, reported by the handler)
        return []
    return [
        (
            ctx.t("arena_choice", arena=a["id"], dataset=Path(a["dataset"]).name, judged=a["judged"], total=a["total"]),
            a["id"],
        )
        for a in found
    ]


@handler(_failed)
def open_arena(ctx: UIContext, run, arena_id):
    if not (run and arena_id):
        return _unchanged()
    return show(ctx, ctx.wb.arena_view(run, arena_id), 0)


@handler(_failed)
def move(ctx: UIContext, place, step: int):
    if not place:
        return _unchanged()
    return show(ctx, ctx.wb.arena_view(place["run"], place["id"]), place["index"] + step)


@handler(_failed)
def judge(ctx: UIContext, place, verdict: str):
    """Record the verdict on the shown item, then show the next item still to judge (or this one, if none)."""
    if not place:
        return _unchanged()
    view = ctx.wb.arena_judge(place["run"], place["id"], place["index"], verdict)
    waiting = [item.index for item in view.items if item.verdict is None]
    later = [i for i in waiting if i > place["index"]] or waiting or [place["index"]]
    return show(ctx, view, later[0])


@handler(_failed)
def act(ctx: UIContext, place, action):
    if not place:
        return _unchanged()
    return show(ctx, action(place["run"], place["id"]), place["index"])


def with_list(ctx: UIContext, place, result):
    """A verdict changes the arena's counts: the list of earlier arenas shows them too."""
    listed = gr.update(choices=arena_choices(ctx, place["run"])) if place else gr.skip()
    return (*result, listed)


def arena_refresh(ctx: UIContext, current_first, current_second):
    runs = ctx.wb.runs_with_results()
    picked = current_first if current_first in runs else (runs[0] if runs else None)
    return (
        gr.update(choices=runs, value=picked),
        gr.update(
            choices=[(ctx.t("arena_base"), ""), *[(r, r) for r in runs]],
            value=current_second if current_second in ("", *runs) else "",
        ),
        gr.update(choices=data_choices(ctx, picked)),
        gr.update(choices=arena_choices(ctx, picked)),
    )

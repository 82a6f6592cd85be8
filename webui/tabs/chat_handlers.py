"""Chat tab handlers: plain functions of the page's values that return (or stream) the updates. Each goes
through `webui.context.handler`, which puts a failure in the tab's notice box; the layout module wires them."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from core.chat.engine import GenerationSettings
from core.chat.turns import (
    ChatReply,
    conversation,
    parse_tools,
    pending_calls,
    reply_entries,
    reply_markup,
    result_entry,
)
from core.errors import WorkbenchError
from webui.context import UIContext, handler
from webui.formatting import reply_markdown

COLUMNS = 3  # side by side: the base model and two runs, by default
VOTES = ("better", "worse", "tie", "write")  # the buttons under each answer


def plain_messages(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gradio 6 hands messages back with content as a list of parts; they go back as plain text, with the metadata
    that makes a thought, a tool call or a tool's result (core/chat/turns.py reads them by it)."""
    messages = []
    for message in history or []:
        content = message.get("content")
        images = []
        if isinstance(content, list):
            images = [{"path": part["file"]["path"]} for part in content if _is_file(part)]
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        entry = {"role": message["role"], "content": [*images, str(content or "")] if images else str(content or "")}
        metadata = {k: v for k, v in (message.get("metadata") or {}).items() if v is not None}
        if metadata:
            entry["metadata"] = metadata
        messages.append(entry)
    return messages


def _is_file(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "file" and bool((part.get("file") or {}).get("path"))


def user_entry(text: str, image: str | None) -> dict[str, Any]:
    """The user's message as the Chatbot shows it: the image (a file part) above the text."""
    return {"role": "user", "content": [{"path": image}, text] if image else text}


def none_choice(ctx: UIContext) -> tuple[str, str]:
    return (ctx.t("adapter_none"), "")


def settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=int(max_new_),
        temperature=temperature_,
        top_p=top_p_,
        greedy=bool(greedy_),
        repetition_penalty=float(penalty_ or 1.0),
        enable_thinking=bool(thinking_),
    )


def entries(ctx: UIContext, reply: ChatReply, turn: int) -> list[dict[str, Any]]:
    t = ctx.t
    title = t("chat_thinking") if reply.done or reply.content else t("chat_thinking_now")
    tokens = t("chat_thinking_tokens", n=reply.reasoning_tokens)
    return reply_entries(reply, turn, title, tokens, lambda name: t("chat_tool_call", name=name))


def result_prompt(ctx: UIContext, shown: list[dict[str, Any]], was_shown: bool = True):
    """The box for the next call that waits for its result (hidden when none does). Its visibility is sent only
    when it changes: gradio 6.31 answered a visibility update in a streamed chat event by putting that
    conversation back into the Chatbot after a later event emptied it ("Open in chat", Clear)."""
    waiting = pending_calls(shown)
    if not waiting:
        return gr.update(visible=False) if was_shown else gr.skip(), gr.skip(), gr.skip()
    call = waiting[0]
    arguments = json.dumps(call["arguments"], ensure_ascii=False)
    label = ctx.t("chat_tool_result_for", name=call["name"], arguments=arguments)
    return gr.update(visible=True), label, ""


def reply_after(ctx: UIContext, shown, model_, adapter_, system_, settings, tools_text_, message_="", box_shown=False):
    """Stream the model's next turn after `shown` (the Chatbot's messages); yields every output of the chat
    (`message_`: what the message box shows meanwhile; `box_shown`: whether the tool-result box shows now —
    it hides while the model answers)."""
    tools = parse_tools(tools_text_)  # checked by the caller: a bad box never gets this far
    reply = None
    for reply in ctx.wb.chat_replies(conversation(shown), model_, adapter_ or None, system_, settings, tools):
        box = (gr.update(visible=False) if box_shown else gr.skip(), gr.skip(), gr.skip())
        box_shown = False
        yield shown + entries(ctx, reply, len(shown)), message_, "", *box
    done = shown + entries(ctx, reply, len(shown)) if reply is not None else shown
    notice = ctx.t("chat_tools_ignored") if reply is not None and reply.tools_ignored else ""
    yield done, message_, notice, *result_prompt(ctx, done, box_shown)


def refresh_choices(ctx: UIContext, current_model, current_adapter, picked_by_hand, *columns_now):
    """Lists read afresh; side by side starts as base | newest finished run | the one before, unless the user
    chose the columns by hand (and their choices still exist)."""
    adapters = ctx.wb.adapter_choices()
    newest = ctx.wb.finished_adapter_runs()[:2]
    defaults = ["", *newest, "", ""][:3]
    kept = picked_by_hand and all(c in ("", *adapters) for c in columns_now)
    none = none_choice(ctx)
    return (
        gr.update(choices=ctx.wb.model_choices()),
        gr.update(choices=[none, *adapters], value=current_adapter if current_adapter in adapters else ""),
        *[
            gr.update(choices=[none, *adapters], value=now if kept else default)
            for now, default in zip(columns_now, defaults)
        ],
    )


def _respond_failed(ctx: UIContext, reason: str, text, history, *_):
    """The conversation as it was, the question kept in the box to send again."""
    history = plain_messages(history)
    return history, text, ctx.error_line(reason), *result_prompt(ctx, history, bool(pending_calls(history)))


@handler(_respond_failed)
def respond(
    ctx: UIContext,
    text,
    history,
    model_,
    adapter_,
    system_,
    temperature_,
    top_p_,
    max_new_,
    greedy_,
    penalty_=1.0,
    thinking_=True,
    tools_text_="",
    image_=None,
):
    history = plain_messages(history)
    box_shown = bool(pending_calls(history))
    if not (text or "").strip() and not image_:
        yield history, "", gr.update(), *result_prompt(ctx, history, box_shown)
        return
    shown = history + [user_entry(text or "", image_)]
    settings = settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_)
    parse_tools(tools_text_)  # a bad Tools box is named before anything is sent; the question stays
    yield from reply_after(ctx, shown, model_, adapter_, system_, settings, tools_text_, box_shown=box_shown)


def _result_failed(ctx: UIContext, reason: str, result, history, *_):
    history = plain_messages(history)
    return history, gr.update(), ctx.error_line(reason), *result_prompt(ctx, history)


@handler(_result_failed)
def send_result(
    ctx: UIContext,
    result,
    history,
    model_,
    adapter_,
    system_,
    temperature_,
    top_p_,
    max_new_,
    greedy_,
    penalty_=1.0,
    thinking_=True,
    tools_text_="",
):
    """The tool's result for the first call that waits for one; once every call has its result, the model
    answers (the results are its next turn's context)."""
    history = plain_messages(history)
    waiting = pending_calls(history)
    if not waiting:
        yield history, gr.update(), ctx.t("chat_no_pending_call"), *result_prompt(ctx, history)
        return
    call = waiting[0]
    parse_tools(tools_text_)  # a bad Tools box is named before the result is taken
    title = ctx.t("chat_tool_result_title", name=call["name"])
    shown = history + [result_entry(call["name"], result or "", int(call["turn"]), int(call["index"]), title)]
    if len(waiting) > 1:
        yield shown, gr.update(), "", *result_prompt(ctx, shown)
        return
    settings = settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_)
    yield from reply_after(ctx, shown, model_, adapter_, system_, settings, tools_text_, gr.update(), True)


@handler(lambda ctx, reason, *_: ctx.error_line(reason))
def toggle_api(ctx: UIContext, on: bool, model_: str, port: float, key: str) -> str:
    if not on:
        ctx.wb.stop_api()
        return ctx.t("api_stopped")
    url = ctx.wb.start_api(model_ or "demo", port=int(port), api_key=key or None)
    return ctx.t("api_running", url=url, base=model_ or "demo")


def _waiting_buttons() -> list:
    return [gr.update(interactive=False, variant="secondary")] * (COLUMNS * len(VOTES))


def _compare_failed(ctx: UIContext, reason: str, *_):
    return *[""] * COLUMNS, None, *_waiting_buttons(), ctx.error_line(reason)


@handler(_compare_failed)
def compare(ctx: UIContext, prompt, model_, system_, temperature_, top_p_, max_new_, greedy_, *columns_and_more):
    """The same prompt through each column's adapter (or the base), one after another, streaming. A column
    that names the same adapter as an earlier one shows that answer again instead of generating twice. Once
    every column has answered, the vote buttons judge this comparison. Answers that think or call tools are
    judged (and stored) whole: reasoning, answer and calls in the model's markup."""
    t = ctx.t
    *adapters, penalty_, thinking_, tools_text_, image_ = columns_and_more
    adapters = [a or "" for a in adapters]
    shown = ["" for _ in adapters]
    answers = ["" for _ in adapters]
    failed = [False for _ in adapters]
    settings = settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_)
    waiting = _waiting_buttons()
    if not (prompt or "").strip():
        yield *shown, None, *waiting, t("compare_no_prompt")
        return
    tools = parse_tools(tools_text_)  # a DataError that names what is wrong in the box
    messages = [{"role": "user", "content": prompt, **({"images": [image_]} if image_ else {})}]
    notice = ""
    for index, adapter_ in enumerate(adapters):
        if adapter_ in adapters[:index]:
            earlier = adapters.index(adapter_)
            shown[index], answers[index], failed[index] = shown[earlier], answers[earlier], failed[earlier]
            yield *shown, None, *waiting, notice
            continue
        try:
            for reply in ctx.wb.chat_replies(messages, model_, adapter_ or None, system_, settings, tools):
                shown[index] = reply_markdown(reply, t, reply.reasoning_tokens)
                yield *shown, None, *waiting, notice
            answers[index] = reply_markup(reply, ctx.wb.chat_engine.reply_format)
            notice = t("chat_tools_ignored") if reply.tools_ignored else notice
        except WorkbenchError as exc:  # this column cannot answer (a run gone, say): the others still do
            shown[index], failed[index] = ctx.error(exc), True
            yield *shown, None, *waiting, notice
    comparison = {
        "messages": messages,
        "system": system_ or "",
        "answers": ["" if bad else answer for answer, bad in zip(answers, failed)],
        "runs": adapters,
        "tools": tools if ctx.wb.chat_engine.takes_tools else None,
        "judged": False,
    }
    votable = [not bad and answer.strip() for answer, bad in zip(answers, failed)]
    # A vote needs two different answers to compare.
    distinct = len({a.strip() for a, ok in zip(comparison["answers"], votable) if ok}) >= 2
    buttons = [
        gr.update(interactive=bool(ok) and (verdict == "write" or distinct), variant="secondary")
        for ok in votable
        for verdict in VOTES
    ]
    yield *shown, comparison, *buttons, notice


def counts_text(ctx: UIContext, counts: dict) -> str:
    return ctx.t(
        "vote_counts",
        dataset=f"feedback/{counts['name']}.jsonl",
        pairs=counts["pairs"],
        ties=counts["ties"],
        written=counts["sft_rows"],
    )


def _unchanged_buttons() -> list:
    return [gr.skip()] * (COLUMNS * len(VOTES))


@handler(lambda ctx, reason, comparison, *_: (comparison, ctx.error_line(reason), *_unchanged_buttons()))
def vote(ctx: UIContext, comparison, column: int, verdict: str, feedback: str):
    """One verdict on the shown comparison, recorded against each other column's (different) answer. The
    chosen button stays marked; the others are done for this comparison."""
    t = ctx.t
    if not comparison:
        return comparison, t("vote_nothing"), *_unchanged_buttons()
    if comparison.get("judged"):
        return comparison, t("vote_already"), *_unchanged_buttons()
    counts = ctx.wb.record_column_judgment(
        comparison["messages"],
        comparison["answers"],
        comparison["runs"],
        column,
        verdict,
        comparison["system"],
        feedback=feedback,
        tools=comparison.get("tools"),
    )
    marked = [
        gr.update(variant="primary")
        if (number, name) == (column, verdict)
        else gr.skip()
        if name == "write"  # a written answer is still welcome after a vote
        else gr.update(interactive=False)
        for number in range(COLUMNS)
        for name in VOTES
    ]
    text = t(f"vote_recorded_{verdict}", column=column + 1) + " " + counts_text(ctx, counts)
    return {**comparison, "judged": True}, text, *marked


@handler(lambda ctx, reason, *_: (gr.skip(), gr.skip(), ctx.error_line(reason)))
def open_writing(ctx: UIContext, comparison, column: int):
    """The text box starts from that column's answer: correcting it is quicker than writing from nothing."""
    t = ctx.t
    if not comparison:
        return gr.skip(), gr.update(visible=False), t("vote_nothing")
    answer = comparison["answers"][column]
    hint = t("vote_write_hint_markup") if "</think>" in answer or "<tool_call>" in answer else t("vote_write_hint")
    return answer, gr.update(visible=True), hint


@handler(lambda ctx, reason, *_: (gr.skip(), ctx.error_line(reason)))
def save_writing(ctx: UIContext, comparison, text: str, feedback: str):
    if not comparison:
        return gr.skip(), ctx.t("vote_nothing")
    counts = ctx.wb.record_written_answer(
        comparison["messages"],
        text,
        [a for a in comparison["answers"] if a],
        [r for r, a in zip(comparison["runs"], comparison["answers"]) if a],
        comparison["system"],
        feedback=feedback,
        tools=comparison.get("tools"),
    )
    return gr.update(visible=False), ctx.t("vote_written_saved") + " " + counts_text(ctx, counts)


def new_conversation():
    return [], "", gr.update(visible=False)

"""Chat tab: a model plus an optional adapter (hot-loaded, the base stays loaded), streaming, multi-turn.

A model of the GLM-4.5 generation thinks and calls tools: its reasoning streams into a collapsed thought above the
answer, its calls show as calls, and a box takes each tool's result (core/chat/turns.py turns replies into the
Chatbot's messages and back into the conversation the template renders)."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from core.chat.engine import GenerationSettings
from core.chat.turns import (
    EXAMPLE_TOOLS,
    ChatReply,
    conversation,
    parse_tools,
    pending_calls,
    reply_entries,
    reply_markup,
    result_entry,
)
from core.feedback import DEFAULT_NAME as DEFAULT_FEEDBACK
from webui.context import UIContext
from webui.formatting import reply_markdown

COLUMNS = 3  # side by side: the base model and two runs, by default
VOTES = ("better", "worse", "tie", "write")  # the buttons under each answer


def plain_messages(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gradio 6 hands messages back with content as a list of parts; they go back as plain text, with the metadata
    that makes a thought, a tool call or a tool's result (core/chat/turns.py reads them by it)."""
    messages = []
    for message in history or []:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        entry = {"role": message["role"], "content": str(content or "")}
        metadata = {k: v for k, v in (message.get("metadata") or {}).items() if v is not None}
        if metadata:
            entry["metadata"] = metadata
        messages.append(entry)
    return messages


def create_chat_tab(ctx: UIContext) -> dict:
    t = ctx.t
    none_choice = (t("adapter_none"), "")
    with gr.Row():
        # Runs are listed when the tab opens: nothing of the workspace is in the page before login.
        model = gr.Dropdown(
            ["demo"],
            value="demo",
            label=t("chat_model"),
            info=t("chat_model_info"),
            allow_custom_value=True,
            scale=2,
            elem_id="chat-model",
        )
        adapter = gr.Dropdown(
            [none_choice],
            value="",
            label=t("chat_adapter"),
            info=t("chat_adapter_info"),
            allow_custom_value=True,
            scale=3,
            elem_id="chat-adapter",
        )
        refresh = gr.Button(t("refresh"), scale=0, min_width=100, elem_id="chat-refresh")
    chatbot = gr.Chatbot(height=420, label=t("tab_chat"), show_label=False, elem_id="chat-history")
    with gr.Row():
        message = gr.Textbox(
            placeholder=t("message_placeholder"),
            label=t("message_placeholder"),
            show_label=False,
            scale=5,
            elem_id="chat-input",
        )
        send = gr.Button(t("send"), variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button(t("stop"), scale=1)
        clear = gr.Button(t("clear"), scale=1)
    # A tool call waits here for its result, which continues the conversation as a tool turn (<|observation|>).
    with gr.Group(visible=False, elem_id="chat-tool-result-group") as result_group:
        result_label = gr.Markdown(elem_id="chat-tool-result-label")
        with gr.Row():
            result_box = gr.Textbox(
                label=t("chat_tool_result"),
                info=t("chat_tool_result_info"),
                lines=2,
                scale=5,
                elem_id="chat-tool-result",
            )
            result_send = gr.Button(
                t("chat_tool_result_send"), variant="primary", scale=1, elem_id="chat-tool-result-send"
            )
    notice = gr.Markdown(elem_id="chat-notice")
    with gr.Row():
        thinking = gr.Checkbox(
            True, label=t("chat_thinking_switch"), info=t("chat_thinking_switch_info"), scale=1, elem_id="chat-thinking"
        )
        with gr.Accordion(t("chat_tools"), open=False, elem_id="chat-tools-accordion"):
            tools_box = gr.Textbox(
                json.dumps(EXAMPLE_TOOLS, ensure_ascii=False, indent=1),
                label=t("chat_tools"),
                info=t("chat_tools_info"),
                lines=8,
                max_lines=20,
                elem_id="chat-tools",
            )
    with gr.Accordion(t("gen_settings"), open=False):
        system = gr.Textbox(label=t("system_prompt"), lines=2)
        with gr.Row():
            temperature = gr.Slider(0, 2, 0.7, step=0.05, label=t("temperature"), elem_id="chat-temperature")
            top_p = gr.Slider(0.05, 1, 0.9, step=0.05, label=t("top_p"))
            max_new_tokens = gr.Slider(8, 2048, 256, step=8, label=t("max_new_tokens"))
            repetition_penalty = gr.Slider(
                1.0, 2.0, 1.0, step=0.05, label=t("repetition_penalty"), info=t("repetition_penalty_info")
            )
            greedy = gr.Checkbox(False, label=t("greedy"), elem_id="chat-greedy")

    def refresh_choices(current_model, current_adapter, picked_by_hand, *columns_now):
        """Lists read afresh; side by side starts as base | newest finished run | the one before, unless the user
        chose the columns by hand (and their choices still exist)."""
        adapters = ctx.wb.adapter_choices()
        newest = ctx.wb.finished_adapter_runs()[:2]
        defaults = ["", *newest, "", ""][:3]
        kept = picked_by_hand and all(c in ("", *adapters) for c in columns_now)
        return (
            gr.update(choices=ctx.wb.model_choices()),
            gr.update(choices=[none_choice, *adapters], value=current_adapter if current_adapter in adapters else ""),
            *[
                gr.update(choices=[none_choice, *adapters], value=now if kept else default)
                for now, default in zip(columns_now, defaults)
            ],
        )

    def settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=int(max_new_),
            temperature=temperature_,
            top_p=top_p_,
            greedy=bool(greedy_),
            repetition_penalty=float(penalty_ or 1.0),
            enable_thinking=bool(thinking_),
        )

    def entries(reply: ChatReply, turn: int) -> list[dict[str, Any]]:
        title = t("chat_thinking") if reply.done or reply.content else t("chat_thinking_now")
        tokens = t("chat_thinking_tokens", n=reply.reasoning_tokens)
        return reply_entries(reply, turn, title, tokens, lambda name: t("chat_tool_call", name=name))

    def result_prompt(shown: list[dict[str, Any]], was_shown: bool = True):
        """The box for the next call that waits for its result (hidden when none does). Its visibility is sent only
        when it changes: gradio 6.31 answered a visibility update in a streamed chat event by putting that
        conversation back into the Chatbot after a later event emptied it ("Open in chat", Clear)."""
        waiting = pending_calls(shown)
        if not waiting:
            return gr.update(visible=False) if was_shown else gr.skip(), gr.skip(), gr.skip()
        call = waiting[0]
        arguments = json.dumps(call["arguments"], ensure_ascii=False)
        label = t("chat_tool_result_for", name=call["name"], arguments=arguments)
        return gr.update(visible=True), label, ""

    def reply_after(shown, model_, adapter_, system_, settings, tools_text_, message_="", box_shown=False):
        """Stream the model's next turn after `shown` (the Chatbot's messages); yields every output of the chat
        (`message_`: what the message box shows meanwhile; `box_shown`: whether the tool-result box shows now —
        it hides while the model answers)."""
        tools = parse_tools(tools_text_)  # checked by the caller: a bad box never gets this far
        reply = None
        for reply in ctx.wb.chat_replies(conversation(shown), model_, adapter_ or None, system_, settings, tools):
            box = (gr.update(visible=False) if box_shown else gr.skip(), gr.skip(), gr.skip())
            box_shown = False
            yield shown + entries(reply, len(shown)), message_, "", *box
        done = shown + entries(reply, len(shown)) if reply is not None else shown
        notice = t("chat_tools_ignored") if reply is not None and reply.tools_ignored else ""
        yield done, message_, notice, *result_prompt(done, box_shown)

    def respond(
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
    ):
        history = plain_messages(history)
        box_shown = bool(pending_calls(history))
        if not (text or "").strip():
            yield history, "", gr.update(), *result_prompt(history, box_shown)
            return
        shown = history + [{"role": "user", "content": text}]
        settings = settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_)
        try:
            parse_tools(tools_text_)  # a bad Tools box is named before anything is sent; the question stays
            yield from reply_after(shown, model_, adapter_, system_, settings, tools_text_, box_shown=box_shown)
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            yield history, text, ctx.error(exc), *result_prompt(history, box_shown)

    def send_result(
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
            yield history, gr.update(), t("chat_no_pending_call"), *result_prompt(history)
            return
        call = waiting[0]
        try:
            parse_tools(tools_text_)
        except Exception as exc:  # noqa: BLE001 - a DataError that names what is wrong in the box
            yield history, gr.update(), ctx.error(exc), *result_prompt(history)
            return
        shown = history + [
            result_entry(
                call["name"],
                result or "",
                int(call["turn"]),
                int(call["index"]),
                t("chat_tool_result_title", name=call["name"]),
            )
        ]
        if len(waiting) > 1:
            yield shown, gr.update(), "", *result_prompt(shown)
            return
        settings = settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_)
        try:
            yield from reply_after(shown, model_, adapter_, system_, settings, tools_text_, gr.update(), True)
        except Exception as exc:  # noqa: BLE001
            yield history, gr.update(), ctx.error(exc), *result_prompt(history)

    with gr.Accordion(t("compare_title"), open=False):
        compare_prompt = gr.Textbox(label=t("compare_prompt"), elem_id="compare-prompt")
        columns = []
        votes = []
        with gr.Row():
            for number in range(COLUMNS):
                with gr.Column():
                    choice = gr.Dropdown(
                        [none_choice],
                        value="",
                        label=t("compare_column", n=number + 1),
                        allow_custom_value=True,
                        elem_id=f"compare-choice-{number + 1}",
                    )
                    answer = gr.Markdown(elem_id=f"compare-answer-{number + 1}")
                    columns.append((choice, answer))
                    with gr.Row():
                        buttons = {
                            verdict: gr.Button(
                                t(f"vote_{verdict}"),
                                size="sm",
                                min_width=60,
                                interactive=False,
                                elem_id=f"vote-{verdict}-{number + 1}",
                            )
                            for verdict in VOTES
                        }
                    votes.append(buttons)
        compare_go = gr.Button(t("compare_go"), elem_id="compare-go")
        with gr.Group(visible=False) as write_group:
            written = gr.Textbox(
                label=t("vote_write_label"), info=t("vote_write_info"), lines=3, elem_id="vote-written"
            )
            save_written = gr.Button(t("vote_write_save"), variant="primary", elem_id="vote-write-save")
        with gr.Row():
            feedback_name = gr.Textbox(
                DEFAULT_FEEDBACK,
                label=t("vote_dataset"),
                info=t("vote_dataset_info"),
                scale=1,
                elem_id="vote-dataset",
            )
            vote_notice = gr.Markdown(elem_id="vote-notice")
        compared = gr.State(None)  # the comparison the vote buttons judge: prompt, system, answers, runs

    with gr.Accordion(t("api_title"), open=False):
        with gr.Row():
            serve = gr.Checkbox(False, label=t("api_serve"), scale=3)
            api_port = gr.Number(8000, label=t("api_port"), precision=0, minimum=1, maximum=65535, scale=1)
            api_key = gr.Textbox(label=t("api_key"), type="password", scale=2)
        api_notice = gr.Markdown()

    def toggle_api(on: bool, model_: str, port: float, key: str):
        if not on:
            ctx.wb.stop_api()
            return t("api_stopped")
        try:
            url = ctx.wb.start_api(model_ or "demo", port=int(port), api_key=key or None)
        except Exception as exc:  # noqa: BLE001
            return ctx.error(exc)
        return t("api_running", url=url, base=model_ or "demo")

    serve.change(toggle_api, [serve, model, api_port, api_key], api_notice, api_name="serve_api")

    def compare(prompt, model_, system_, temperature_, top_p_, max_new_, greedy_, *columns_and_more):
        """The same prompt through each column's adapter (or the base), one after another, streaming. A column
        that names the same adapter as an earlier one shows that answer again instead of generating twice. Once
        every column has answered, the vote buttons judge this comparison. Answers that think or call tools are
        judged (and stored) whole: reasoning, answer and calls in the model's markup."""
        *adapters, penalty_, thinking_, tools_text_ = columns_and_more
        adapters = [a or "" for a in adapters]
        shown = ["" for _ in adapters]
        answers = ["" for _ in adapters]
        failed = [False for _ in adapters]
        settings = settings_of(temperature_, top_p_, max_new_, greedy_, penalty_, thinking_)
        waiting = [gr.update(interactive=False, variant="secondary")] * (COLUMNS * len(VOTES))
        if not (prompt or "").strip():
            yield *shown, None, *waiting, t("compare_no_prompt")
            return
        try:
            tools = parse_tools(tools_text_)
        except Exception as exc:  # noqa: BLE001 - a DataError that names what is wrong in the box
            yield *shown, None, *waiting, ctx.error(exc)
            return
        messages = [{"role": "user", "content": prompt}]
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
                answers[index] = reply_markup(reply, ctx.wb.chat_engine.thinking_format)
                notice = t("chat_tools_ignored") if reply.tools_ignored else notice
            except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
                shown[index], failed[index] = ctx.error(exc), True
                yield *shown, None, *waiting, notice
        comparison = {
            "messages": messages,
            "system": system_ or "",
            "answers": ["" if bad else answer for answer, bad in zip(answers, failed)],
            "runs": adapters,
            "tools": tools if ctx.wb.chat_engine.thinking_format is not None else None,
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

    def vote(comparison, column: int, verdict: str, feedback: str):
        """One verdict on the shown comparison, recorded against each other column's (different) answer. The
        chosen button stays marked; the others are done for this comparison."""
        unchanged = [gr.skip()] * (COLUMNS * len(VOTES))
        if not comparison:
            return comparison, t("vote_nothing"), *unchanged
        if comparison.get("judged"):
            return comparison, t("vote_already"), *unchanged
        try:
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
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            return comparison, ctx.error(exc), *unchanged
        marked = [
            gr.update(variant="primary")
            if (number, name) == (column, verdict)
            else gr.skip()
            if name == "write"  # a written answer is still welcome after a vote
            else gr.update(interactive=False)
            for number in range(COLUMNS)
            for name in VOTES
        ]
        text = t(f"vote_recorded_{verdict}", column=column + 1) + " " + counts_text(counts)
        return {**comparison, "judged": True}, text, *marked

    def counts_text(counts: dict) -> str:
        return t(
            "vote_counts",
            dataset=f"feedback/{counts['name']}.jsonl",
            pairs=counts["pairs"],
            ties=counts["ties"],
            written=counts["sft_rows"],
        )

    def open_writing(comparison, column: int):
        """The text box starts from that column's answer: correcting it is quicker than writing from nothing."""
        if not comparison:
            return gr.skip(), gr.update(visible=False), t("vote_nothing")
        answer = comparison["answers"][column]
        hint = t("vote_write_hint_markup") if "</think>" in answer or "<tool_call>" in answer else t("vote_write_hint")
        return answer, gr.update(visible=True), hint

    def save_writing(comparison, text: str, feedback: str):
        if not comparison:
            return gr.skip(), t("vote_nothing")
        try:
            counts = ctx.wb.record_written_answer(
                comparison["messages"],
                text,
                [a for a in comparison["answers"] if a],
                [r for r, a in zip(comparison["runs"], comparison["answers"]) if a],
                comparison["system"],
                feedback=feedback,
                tools=comparison.get("tools"),
            )
        except Exception as exc:  # noqa: BLE001
            return gr.skip(), ctx.error(exc)
        return gr.update(visible=False), t("vote_written_saved") + " " + counts_text(counts)

    chat_io = dict(
        fn=respond,
        inputs=[
            message,
            chatbot,
            model,
            adapter,
            system,
            temperature,
            top_p,
            max_new_tokens,
            greedy,
            repetition_penalty,
            thinking,
            tools_box,
        ],
        outputs=[chatbot, message, notice, result_group, result_label, result_box],
    )
    sent = send.click(**chat_io, api_name="chat")
    submitted = message.submit(**chat_io, api_name=False)
    result_io = {**chat_io, "fn": send_result, "inputs": [result_box, *chat_io["inputs"][1:]]}
    resulted = result_send.click(**result_io, api_name="chat_tool_result")
    result_submitted = result_box.submit(**result_io, api_name=False)
    vote_buttons = [button for buttons in votes for button in buttons.values()]
    comparing = compare_go.click(
        compare,
        [
            compare_prompt,
            model,
            system,
            temperature,
            top_p,
            max_new_tokens,
            greedy,
            *[c for c, _ in columns],
            repetition_penalty,
            thinking,
            tools_box,
        ],
        [*[a for _, a in columns], compared, *vote_buttons, vote_notice],
        api_name="compare",
    )
    for column, buttons in enumerate(votes):
        for verdict in ("better", "worse", "tie"):
            buttons[verdict].click(
                lambda comparison, feedback, column=column, verdict=verdict: vote(
                    comparison, column, verdict, feedback
                ),
                [compared, feedback_name],
                [compared, vote_notice, *vote_buttons],
                api_name=False,
            )
        buttons["write"].click(
            lambda comparison, column=column: open_writing(comparison, column),
            compared,
            [written, write_group, vote_notice],
            api_name=False,
        )
    save_written.click(save_writing, [compared, written, feedback_name], [write_group, vote_notice], api_name=False)
    # Stopping cancels the streaming event; the engine then ends generation at the next token.
    streams = [sent, submitted, resulted, result_submitted, comparing]
    stop.click(None, None, None, cancels=streams, api_name=False)
    fresh = [chatbot, notice, result_group]

    def new_conversation():
        return [], "", gr.update(visible=False)

    # A new conversation also stops a reply still streaming: it would write the old one back when it ends.
    clear.click(new_conversation, None, fresh, cancels=streams, api_name=False)
    # A different model or adapter starts a new conversation: old answers came from other weights.
    for selector in (model, adapter):
        selector.input(new_conversation, None, fresh, cancels=streams, api_name=False)
    choice_outputs = [model, adapter, *[c for c, _ in columns]]
    picked_by_hand = gr.State(False)
    for choice, _ in columns:
        choice.input(lambda: True, None, picked_by_hand, api_name=False)
    refresh_inputs = [model, adapter, picked_by_hand, *[c for c, _ in columns]]
    refresh.click(refresh_choices, refresh_inputs, choice_outputs, api_name="refresh_chat_choices")
    # Greedy decoding ignores temperature and top-p: they are not editable while it is on.
    greedy.change(
        lambda on: (gr.update(interactive=not on), gr.update(interactive=not on)),
        greedy,
        [temperature, top_p],
        api_name=False,
    )
    return {
        "model": model,
        "adapter": adapter,
        "chatbot": chatbot,
        "streams": streams,
        "refresh": (refresh_choices, refresh_inputs, choice_outputs),
    }

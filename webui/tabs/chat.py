"""Chat tab: a model plus an optional adapter (hot-loaded, the base stays loaded), streaming, multi-turn."""

from __future__ import annotations

from typing import Any

import gradio as gr

from core.chat.engine import GenerationSettings
from core.feedback import DEFAULT_NAME as DEFAULT_FEEDBACK
from webui.context import UIContext

COLUMNS = 3  # side by side: the base model and two runs, by default
VOTES = ("better", "worse", "tie", "write")  # the buttons under each answer


def plain_messages(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Gradio 6 hands messages back with content as a list of parts; the engine wants plain text."""
    messages = []
    for message in history or []:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        messages.append({"role": message["role"], "content": str(content or "")})
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
    notice = gr.Markdown()
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

    def respond(text, history, model_, adapter_, system_, temperature_, top_p_, max_new_, greedy_, penalty_=1.0):
        if not (text or "").strip():
            yield history, "", gr.update()
            return
        messages = plain_messages(history) + [{"role": "user", "content": text}]
        settings = GenerationSettings(
            max_new_tokens=int(max_new_),
            temperature=temperature_,
            top_p=top_p_,
            greedy=bool(greedy_),
            repetition_penalty=float(penalty_ or 1.0),
        )
        shown = messages + [{"role": "assistant", "content": ""}]
        try:
            for reply in ctx.wb.chat_stream(messages, model_, adapter_ or None, system_, settings):
                shown[-1]["content"] = reply
                yield shown, "", ""
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            yield plain_messages(history), text, ctx.error(exc)

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

    def compare(prompt, model_, system_, temperature_, top_p_, max_new_, greedy_, *columns_and_penalty):
        """The same prompt through each column's adapter (or the base), one after another, streaming. A column
        that names the same adapter as an earlier one shows that answer again instead of generating twice. Once
        every column has answered, the vote buttons judge this comparison."""
        *adapters, penalty_ = columns_and_penalty
        adapters = [a or "" for a in adapters]
        answers = ["" for _ in adapters]
        failed = [False for _ in adapters]
        settings = GenerationSettings(
            max_new_tokens=int(max_new_),
            temperature=temperature_,
            top_p=top_p_,
            greedy=bool(greedy_),
            repetition_penalty=float(penalty_ or 1.0),
        )
        waiting = [gr.update(interactive=False)] * (COLUMNS * len(VOTES))
        if not (prompt or "").strip():
            yield *answers, None, *waiting, t("compare_no_prompt")
            return
        messages = [{"role": "user", "content": prompt}]
        for index, adapter_ in enumerate(adapters):
            if adapter_ in adapters[:index]:
                earlier = adapters.index(adapter_)
                answers[index], failed[index] = answers[earlier], failed[earlier]
                yield *answers, None, *waiting, ""
                continue
            try:
                for reply in ctx.wb.chat_stream(messages, model_, adapter_ or None, system_, settings):
                    answers[index] = reply
                    yield *answers, None, *waiting, ""
            except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
                answers[index], failed[index] = ctx.error(exc), True
                yield *answers, None, *waiting, ""
        comparison = {
            "messages": messages,
            "system": system_ or "",
            "answers": ["" if bad else answer for answer, bad in zip(answers, failed)],
            "runs": adapters,
            "judged": False,
        }
        votable = [not bad and answer.strip() for answer, bad in zip(answers, failed)]
        # A vote needs two different answers to compare.
        distinct = len({a.strip() for a, ok in zip(comparison["answers"], votable) if ok}) >= 2
        buttons = [
            gr.update(interactive=bool(ok) and (verdict == "write" or distinct)) for ok in votable for verdict in VOTES
        ]
        yield *answers, comparison, *buttons, ""

    def vote(comparison, column: int, verdict: str, feedback: str):
        """One verdict on the shown comparison, recorded against each other column's (different) answer."""
        if not comparison:
            return comparison, t("vote_nothing")
        if comparison.get("judged"):
            return comparison, t("vote_already")
        try:
            counts = ctx.wb.record_column_judgment(
                comparison["messages"],
                comparison["answers"],
                comparison["runs"],
                column,
                verdict,
                comparison["system"],
                feedback=feedback,
            )
        except Exception as exc:  # noqa: BLE001 - ours are explained, anything else is reported as a bug
            return comparison, ctx.error(exc)
        return {**comparison, "judged": True}, t(f"vote_recorded_{verdict}", column=column + 1) + " " + counts_text(
            counts
        )

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
        return comparison["answers"][column], gr.update(visible=True), t("vote_write_hint")

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
        ],
        outputs=[chatbot, message, notice],
    )
    sent = send.click(**chat_io, api_name="chat")
    submitted = message.submit(**chat_io, api_name=False)
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
                [compared, vote_notice],
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
    stop.click(None, None, None, cancels=[sent, submitted, comparing], api_name=False)
    clear.click(lambda: ([], ""), None, [chatbot, notice], api_name=False)
    # A different model or adapter starts a new conversation: old answers came from other weights.
    for selector in (model, adapter):
        selector.input(lambda: ([], ""), None, [chatbot, notice], api_name=False)
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
        "refresh": (refresh_choices, refresh_inputs, choice_outputs),
    }

"""Chat tab: a model plus an optional adapter (hot-loaded, the base stays loaded), streaming, multi-turn.

A model of the GLM-4.5 generation thinks and calls tools: its reasoning streams into a collapsed thought above the
answer, its calls show as calls, and a box takes each tool's result (core/chat/turns.py turns replies into the
Chatbot's messages and back into the conversation the template renders). This module lays the tab out and wires
its events; what the events do is in chat_handlers.py."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import gradio as gr

from core.chat.turns import EXAMPLE_TOOLS
from core.feedback import DEFAULT_NAME as DEFAULT_FEEDBACK
from webui.context import UIContext
from webui.tabs import chat_handlers as h
from webui.tabs.chat_handlers import COLUMNS, VOTES


def conversation_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    """The pickers, the conversation, the message box and the tool-result box."""
    t = ctx.t
    with gr.Row():
        # Runs are listed when the tab opens: nothing of the workspace is in the page before login.
        ui.model = gr.Dropdown(
            ["demo"],
            value="demo",
            label=t("chat_model"),
            info=t("chat_model_info"),
            allow_custom_value=True,
            scale=2,
            elem_id="chat-model",
        )
        ui.adapter = gr.Dropdown(
            [h.none_choice(ctx)],
            value="",
            label=t("chat_adapter"),
            info=t("chat_adapter_info"),
            allow_custom_value=True,
            scale=3,
            elem_id="chat-adapter",
        )
        ui.refresh = gr.Button(t("refresh"), scale=0, min_width=100, elem_id="chat-refresh")
    ui.chatbot = gr.Chatbot(height=420, label=t("tab_chat"), show_label=False, elem_id="chat-history")
    with gr.Row():
        ui.message = gr.Textbox(
            placeholder=t("message_placeholder"),
            label=t("message_placeholder"),
            show_label=False,
            scale=5,
            elem_id="chat-input",
        )
        # A GLM-V model reads it with the message (and side by side with its prompt); upload or paste.
        ui.image = gr.Image(
            type="filepath",
            sources=["upload", "clipboard"],
            label=t("chat_image"),
            height=96,
            scale=1,
            min_width=96,
            elem_id="chat-image",
        )
        ui.send = gr.Button(t("send"), variant="primary", scale=1, elem_id="chat-send")
        ui.stop = gr.Button(t("stop"), scale=1)
        ui.clear = gr.Button(t("clear"), scale=1, elem_id="chat-clear")
    # A tool call waits here for its result, which continues the conversation as a tool turn (<|observation|>).
    with gr.Group(visible=False, elem_id="chat-tool-result-group") as ui.result_group:
        ui.result_label = gr.Markdown(elem_id="chat-tool-result-label")
        with gr.Row():
            ui.result_box = gr.Textbox(
                label=t("chat_tool_result"),
                info=t("chat_tool_result_info"),
                lines=2,
                scale=5,
                elem_id="chat-tool-result",
            )
            ui.result_send = gr.Button(
                t("chat_tool_result_send"), variant="primary", scale=1, elem_id="chat-tool-result-send"
            )
    ui.notice = gr.Markdown(elem_id="chat-notice")


def settings_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    """Thinking, the tools the model may call, and the generation settings."""
    t = ctx.t
    with gr.Row():
        ui.thinking = gr.Checkbox(
            True, label=t("chat_thinking_switch"), info=t("chat_thinking_switch_info"), scale=1, elem_id="chat-thinking"
        )
        with gr.Accordion(t("chat_tools"), open=False, elem_id="chat-tools-accordion"):
            ui.tools_box = gr.Textbox(
                json.dumps(EXAMPLE_TOOLS, ensure_ascii=False, indent=1),
                label=t("chat_tools"),
                info=t("chat_tools_info"),
                lines=8,
                max_lines=20,
                elem_id="chat-tools",
            )
    with gr.Accordion(t("gen_settings"), open=False):
        ui.system = gr.Textbox(label=t("system_prompt"), lines=2)
        with gr.Row():
            ui.temperature = gr.Slider(0, 2, 0.7, step=0.05, label=t("temperature"), elem_id="chat-temperature")
            ui.top_p = gr.Slider(0.05, 1, 0.9, step=0.05, label=t("top_p"))
            ui.max_new_tokens = gr.Slider(8, 2048, 256, step=8, label=t("max_new_tokens"))
            ui.repetition_penalty = gr.Slider(
                1.0, 2.0, 1.0, step=0.05, label=t("repetition_penalty"), info=t("repetition_penalty_info")
            )
            ui.greedy = gr.Checkbox(False, label=t("greedy"), elem_id="chat-greedy")


def compare_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    """Side by side: one prompt through each column's adapter, vote buttons under each answer."""
    t = ctx.t
    with gr.Accordion(t("compare_title"), open=False):
        ui.compare_prompt = gr.Textbox(label=t("compare_prompt"), elem_id="compare-prompt")
        ui.columns, ui.votes = [], []
        with gr.Row():
            for number in range(COLUMNS):
                with gr.Column():
                    choice = gr.Dropdown(
                        [h.none_choice(ctx)],
                        value="",
                        label=t("compare_column", n=number + 1),
                        allow_custom_value=True,
                        elem_id=f"compare-choice-{number + 1}",
                    )
                    answer = gr.Markdown(elem_id=f"compare-answer-{number + 1}")
                    ui.columns.append((choice, answer))
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
                    ui.votes.append(buttons)
        ui.compare_go = gr.Button(t("compare_go"), elem_id="compare-go")
        with gr.Group(visible=False) as ui.write_group:
            ui.written = gr.Textbox(
                label=t("vote_write_label"), info=t("vote_write_info"), lines=3, elem_id="vote-written"
            )
            ui.save_written = gr.Button(t("vote_write_save"), variant="primary", elem_id="vote-write-save")
        with gr.Row():
            ui.feedback_name = gr.Textbox(
                DEFAULT_FEEDBACK,
                label=t("vote_dataset"),
                info=t("vote_dataset_info"),
                scale=1,
                elem_id="vote-dataset",
            )
            ui.vote_notice = gr.Markdown(elem_id="vote-notice")
        ui.compared = gr.State(None)  # the comparison the vote buttons judge: prompt, system, answers, runs


def api_layout(ctx: UIContext, ui: SimpleNamespace) -> None:
    t = ctx.t
    with gr.Accordion(t("api_title"), open=False):
        with gr.Row():
            ui.serve = gr.Checkbox(False, label=t("api_serve"), scale=3)
            ui.api_port = gr.Number(8000, label=t("api_port"), precision=0, minimum=1, maximum=65535, scale=1)
            ui.api_key = gr.Textbox(label=t("api_key"), type="password", scale=2)
        ui.api_notice = gr.Markdown()


def wire_streams(ctx: UIContext, ui: SimpleNamespace) -> list:
    """The events that stream a reply (chat, a tool's result, side by side); Stop and Clear cancel them."""
    settings = [ui.temperature, ui.top_p, ui.max_new_tokens, ui.greedy]
    chat_io = dict(
        fn=partial(h.respond, ctx),
        inputs=[ui.message, ui.chatbot, ui.model, ui.adapter, ui.system, *settings, ui.repetition_penalty]
        + [ui.thinking, ui.tools_box, ui.image],
        outputs=[ui.chatbot, ui.message, ui.notice, ui.result_group, ui.result_label, ui.result_box],
    )
    sent = ui.send.click(**chat_io, api_name="chat")
    submitted = ui.message.submit(**chat_io, api_name=False)
    for event in (sent, submitted):  # the image went with that message; the next one starts without
        event.success(lambda: None, None, ui.image, api_name=False)
    result_io = {**chat_io, "fn": partial(h.send_result, ctx), "inputs": [ui.result_box, *chat_io["inputs"][1:-1]]}
    resulted = ui.result_send.click(**result_io, api_name="chat_tool_result")
    result_submitted = ui.result_box.submit(**result_io, api_name=False)
    comparing = ui.compare_go.click(
        partial(h.compare, ctx),
        [ui.compare_prompt, ui.model, ui.system, *settings, *[c for c, _ in ui.columns]]
        + [ui.repetition_penalty, ui.thinking, ui.tools_box, ui.image],
        [*[a for _, a in ui.columns], ui.compared, *ui.vote_buttons, ui.vote_notice],
        api_name="compare",
    )
    return [sent, submitted, resulted, result_submitted, comparing]


def wire_votes(ctx: UIContext, ui: SimpleNamespace) -> None:
    for column, buttons in enumerate(ui.votes):
        for verdict in ("better", "worse", "tie"):
            buttons[verdict].click(
                lambda comparison, feedback, column=column, verdict=verdict: h.vote(
                    ctx, comparison, column, verdict, feedback
                ),
                [ui.compared, ui.feedback_name],
                [ui.compared, ui.vote_notice, *ui.vote_buttons],
                api_name=False,
            )
        buttons["write"].click(
            lambda comparison, column=column: h.open_writing(ctx, comparison, column),
            ui.compared,
            [ui.written, ui.write_group, ui.vote_notice],
            api_name=False,
        )
    ui.save_written.click(
        partial(h.save_writing, ctx),
        [ui.compared, ui.written, ui.feedback_name],
        [ui.write_group, ui.vote_notice],
        api_name=False,
    )


def create_chat_tab(ctx: UIContext) -> dict:
    ui = SimpleNamespace()
    conversation_layout(ctx, ui)
    settings_layout(ctx, ui)
    compare_layout(ctx, ui)
    api_layout(ctx, ui)
    ui.vote_buttons = [button for buttons in ui.votes for button in buttons.values()]
    ui.serve.change(
        partial(h.toggle_api, ctx), [ui.serve, ui.model, ui.api_port, ui.api_key], ui.api_notice, api_name="serve_api"
    )
    streams = wire_streams(ctx, ui)
    wire_votes(ctx, ui)
    # Stopping cancels the streaming event; the engine then ends generation at the next token.
    ui.stop.click(None, None, None, cancels=streams, api_name=False)
    fresh = [ui.chatbot, ui.notice, ui.result_group]
    # A new conversation also stops a reply still streaming: it would write the old one back when it ends.
    ui.clear.click(h.new_conversation, None, fresh, cancels=streams, api_name=False)
    # A different model or adapter starts a new conversation: old answers came from other weights.
    for selector in (ui.model, ui.adapter):
        selector.input(h.new_conversation, None, fresh, cancels=streams, api_name=False)
    choice_outputs = [ui.model, ui.adapter, *[c for c, _ in ui.columns]]
    picked_by_hand = gr.State(False)
    for choice, _ in ui.columns:
        choice.input(lambda: True, None, picked_by_hand, api_name=False)
    refresh_inputs = [ui.model, ui.adapter, picked_by_hand, *[c for c, _ in ui.columns]]
    refresh_choices = partial(h.refresh_choices, ctx)
    ui.refresh.click(refresh_choices, refresh_inputs, choice_outputs, api_name="refresh_chat_choices")
    # Greedy decoding ignores temperature and top-p: they are not editable while it is on.
    ui.greedy.change(
        lambda on: (gr.update(interactive=not on), gr.update(interactive=not on)),
        ui.greedy,
        [ui.temperature, ui.top_p],
        api_name=False,
    )
    return {
        "model": ui.model,
        "adapter": ui.adapter,
        "chatbot": ui.chatbot,
        "streams": streams,
        "refresh": (refresh_choices, refresh_inputs, choice_outputs),
    }

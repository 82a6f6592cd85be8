"""Reasoning and tool calls through the OpenAI-compatible API, driven by the official `openai` client, on the MoE
demo after a short training that teaches it to call a tool: `tool_calls` (ids, name, JSON arguments) and
`reasoning_content`, streamed and not; the tool's result continues the conversation; bad tool requests are 400s."""

from __future__ import annotations

import json

import openai
import pytest

from core.api import ApiServer, create_api
from core.chat.engine import ChatEngine
from core.data.readers import resolve_dataset
from tests.ui_server import free_port

pytestmark = pytest.mark.slow
ROWS = json.loads(resolve_dataset("tool_calls").read_text(encoding="utf-8"))
TOOLS = ROWS[0]["tools"]
# The weather rows: the city called -> (the tool's result, the final answer) the demo set teaches.
WEATHER = {
    json.loads(row["messages"][1]["tool_calls"][0]["function"]["arguments"])["city"]: (
        row["messages"][2]["content"],
        row["messages"][3]["content"],
    )
    for row in ROWS
    if row["messages"][1].get("tool_calls") and row["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
}
QUESTION = [{"role": "user", "content": "北京今天天气怎么样？"}]


@pytest.fixture(scope="module")
def api(tool_caller_run_dir):
    run = tool_caller_run_dir
    engine = ChatEngine()
    engine.load_model("demo-moe")
    server = ApiServer(create_api(engine, "demo-moe", lambda: {"tools": str(run / "adapter")}), port=free_port())
    server.start()
    yield openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
    server.stop()


def ask(client, messages, **kwargs):
    return client.chat.completions.create(model="tools", messages=messages, tools=TOOLS, temperature=0, **kwargs)


def test_the_tool_call_and_the_reasoning_come_back_as_fields(api):
    choice = ask(api, QUESTION).choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    # A 6M-parameter model after a minute of training: the right tool with a city argument (which city it picks is
    # the tiny model's business; the arguments are parsed JSON either way).
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] in WEATHER
    assert "get_weather" in choice.message.model_extra["reasoning_content"]
    assert not choice.message.content  # no markup left over as text
    # The tool's result continues the conversation (the assistant's message sent back whole, its reasoning_content
    # included, as GLM's API asks): the final answer, with its own reasoning.
    result, answer = WEATHER[json.loads(call.function.arguments)["city"]]
    follow = [
        *QUESTION,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    final = ask(api, follow).choices[0]
    assert final.finish_reason == "stop" and final.message.tool_calls is None
    assert final.message.content == answer
    assert final.message.model_extra["reasoning_content"]


def test_streamed_the_same_answer_arrives_in_deltas(api):
    whole = ask(api, QUESTION).choices[0]
    reasoning, content, calls, finish = "", "", [], None
    for chunk in ask(api, QUESTION, stream=True):
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and not content.strip()
    assert reasoning.strip() == whole.message.model_extra["reasoning_content"]
    (call,) = whole.message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", call.function.arguments)]


def test_thinking_off_prompts_with_the_templates_empty_think_block(api):
    """chat_template_kwargs.enable_thinking=false (vLLM's and SGLang's field) ends the prompt as GLM-4.5's template
    does with enable_thinking=False: `<|assistant|>` then an empty think block, and `/nothink` after the question.
    (Whether a one-minute demo model then skips thinking is up to what it was trained on.)"""
    on = ask(api, QUESTION, max_tokens=1).usage.prompt_tokens
    off = ask(api, QUESTION, max_tokens=1, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    from core.models.loader import load_tokenizer, prepare_model

    tokenizer = load_tokenizer(prepare_model("demo-moe"))
    added = len(tokenizer.encode("/nothink", add_special_tokens=False)) + len(
        tokenizer.encode("\n<think></think>", add_special_tokens=False)
    )
    assert off.usage.prompt_tokens == on + added


@pytest.mark.parametrize(
    ("messages", "extra", "param"),
    [
        ([*QUESTION, {"role": "tool", "tool_call_id": "nope", "content": "x"}], {}, "messages[1]"),
        (
            [
                *QUESTION,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}],
                },
                {"role": "tool", "tool_call_id": "c", "content": "x"},
            ],
            {},
            "messages[1].tool_calls",
        ),
        (QUESTION, {"tool_choice": {"type": "function", "function": {"name": "missing"}}}, "tool_choice"),
    ],
    ids=["unknown-tool-call-id", "arguments-not-json", "unknown-tool-choice"],
)
def test_bad_tool_requests_are_openai_400s(api, messages, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(api, messages, **extra)
    assert caught.value.status_code == 400 and caught.value.body["param"] == param

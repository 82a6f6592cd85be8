"""A reply of the GLM-4.5 generation taken apart (reasoning, content, tool calls): what chat and the API show and
return. Each case is what the real template writes for an assistant message, so parse(render(message)) gives the
message back, for GLM-4.5 and GLM-4.7 alike; markup that does not parse stays text."""

from __future__ import annotations

import pytest

from core.data import glm45

MESSAGES = [
    {"role": "assistant", "content": "我是小蓝。", "reasoning": "身份问题。"},
    {
        "role": "assistant",
        "content": "",
        "reasoning": "查天气。",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "北京", "days": 2}}],
    },
    {
        "role": "assistant",
        "content": "我来查。",
        "reasoning": "",
        "tool_calls": [
            {"name": "search", "arguments": {"q": "a < b", "filters": {"top": [1, 2]}}},
            {"name": "now", "arguments": {}},
        ],
    },
]


def written(message: dict, form) -> str:
    """What the model writes for `message` after the generation prompt (the real templates' layout)."""
    pieces = glm45.pieces([{"role": "user", "content": "q"}, message], form=form)
    assistant = "".join(text for text, _ in pieces[pieces.index(("<|assistant|>", False)) + 1 :])
    return assistant.removeprefix(form.generation())


@pytest.mark.parametrize("form", [glm45.GLM45, glm45.GLM47], ids=["glm4_moe", "glm47"])
@pytest.mark.parametrize("message", MESSAGES, ids=["answer", "call", "answer-and-calls"])
def test_a_reply_parses_back_into_its_message(form, message):
    reply = glm45.parse_reply(written(message, form), form)
    assert reply.reasoning == message["reasoning"]
    assert reply.content == message["content"]
    assert reply.tool_calls == message.get("tool_calls", [])


def test_markup_that_does_not_parse_stays_text():
    reply = glm45.parse_reply("\n<think>x</think>\nsee <tool_call>broken<arg_key>k</arg_key>oops</tool_call> end")
    assert reply.reasoning == "x" and reply.tool_calls == []
    assert "<tool_call>broken" in reply.content and reply.content.endswith("end")
    unclosed = glm45.parse_reply("\n<think>still thinking")
    assert unclosed.reasoning == "" and "still thinking" in unclosed.content

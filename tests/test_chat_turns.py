"""The chat page's turns (core/chat/turns.py): a thinking, tool-calling reply becomes a collapsed thought, the answer
and the calls; typed tool results continue it; and the page's list read back renders, token for token, what the
model's own chat template renders for the same conversation (tests/fixtures/templates/), earlier reasoning dropped
as that template drops it. Feedback answers in markup read back into the template with their reasoning and calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.chat.turns import (
    EXAMPLE_TOOLS,
    answer_only,
    conversation,
    parse_tools,
    pending_calls,
    read_reply,
    reasoning_of,
    reply_entries,
    reply_markup,
    result_entry,
)
from core.data.formats import convert_row
from core.data.glm45 import GLM45, GLM47
from core.data.template import TemplateEncoder
from core.errors import DataError
from core.feedback import FeedbackStore
from core.models.demo import DEMOS, build_tokenizer

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
CASES = [("GLM-4.6", "glm4_moe", GLM45), ("GLM-4.7-Flash", "glm47", GLM47)]
QUESTION = {"role": "user", "content": "北京今天天气怎么样？"}
CALLING = {
    "role": "assistant",
    "content": "",
    "reasoning_content": "用户想知道北京的天气，调用 get_weather。",
    "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}}],
}
RESULT = {"role": "tool", "content": '{"city": "北京", "weather": "晴，25°C"}'}
FINAL = {"role": "assistant", "content": "北京今天晴，25°C。", "reasoning_content": "工具返回了结果。"}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(DEMOS["demo-moe"])


def real(tokenizer, name: str, messages: list[dict], **kwargs) -> str:
    source = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    return tokenizer.apply_chat_template(
        messages, tools=EXAMPLE_TOOLS, chat_template=source, tokenize=False, add_generation_prompt=True, **kwargs
    )


def written_by_model(tokenizer, name: str, before: list[dict], answer: dict) -> str:
    """What the model writes for `answer`: the real template's text after the generation prompt."""
    prompt = real(tokenizer, name, before)
    whole = tokenizer.apply_chat_template(
        [*before, answer],
        tools=EXAMPLE_TOOLS,
        chat_template=(TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"),
        tokenize=False,
    )
    assert whole.startswith(prompt)
    return whole[len(prompt) :]


def titles(name: str) -> str:
    return f"calls {name}"


@pytest.mark.parametrize(("name", "template", "form"), CASES)
def test_a_tool_call_round_trip_renders_what_the_real_template_renders(tokenizer, name, template, form):
    text = written_by_model(tokenizer, name, [QUESTION], CALLING)
    reply = read_reply(text, form, done=True, count_tokens=lambda s: len(tokenizer(s)["input_ids"]))
    assert reply.reasoning == CALLING["reasoning_content"] and reply.content == ""
    assert reply.tool_calls == [{"name": "get_weather", "arguments": {"city": "北京"}}]
    assert reply.reasoning_tokens > 3

    page = [QUESTION, *reply_entries(reply, 1, "Thinking", "n tokens", titles)]
    thought, call = page[1], page[2]
    assert thought["metadata"]["status"] == "done" and thought["content"] == CALLING["reasoning_content"]
    assert call["metadata"]["title"] == "calls get_weather" and "<tool_call>" not in call["content"]
    assert json.loads(call["content"].strip("`").removeprefix("json")) == {"city": "北京"}
    assert [c["name"] for c in pending_calls(page)] == ["get_weather"]

    page.append(result_entry("get_weather", RESULT["content"], 1, 0, "result"))
    assert pending_calls(page) == []
    encoder = TemplateEncoder(tokenizer, template)
    ours = tokenizer.decode(encoder.encode_prompt(conversation(page), "", EXAMPLE_TOOLS))
    assert ours == real(tokenizer, name, [QUESTION, CALLING, RESULT])

    # The final answer, then a new question: the earlier turns' reasoning is dropped as the real template drops it.
    final = read_reply(written_by_model(tokenizer, name, [QUESTION, CALLING, RESULT], FINAL), form, done=True)
    assert final.content == FINAL["content"] and final.reasoning == FINAL["reasoning_content"]
    page += reply_entries(final, 2, "Thinking", "", titles)
    follow = {"role": "user", "content": "上海呢？"}
    page.append(follow)
    ours = tokenizer.decode(encoder.encode_prompt(conversation(page), "", EXAMPLE_TOOLS))
    assert ours == real(tokenizer, name, [QUESTION, CALLING, RESULT, FINAL, follow])


def test_gradio_hands_content_back_as_parts_and_it_reads_the_same():
    reply = read_reply("<think>想一想</think>\n答案", GLM45, done=True)
    page = [QUESTION, *reply_entries(reply, 1, "Thinking", "", titles)]
    as_parts = [{**entry, "content": [{"type": "text", "text": entry["content"]}]} for entry in page]
    assert (
        conversation(as_parts)
        == conversation(page)
        == [
            QUESTION,
            {"role": "assistant", "content": "答案", "reasoning": "想一想"},
        ]
    )


def test_a_reply_still_streaming_shows_reasoning_and_never_half_markup():
    partial = read_reply("<think>想一想", GLM45, done=False)
    assert (partial.reasoning, partial.content) == ("想一想", "")
    partial = read_reply("<think>想</think>\n好的<tool_", GLM45, done=False)
    assert (partial.reasoning, partial.content, partial.tool_calls) == ("想", "好的", [])
    plain = read_reply("plain text <think>", None, done=True)  # a model without the format: text as written
    assert (plain.content, plain.reasoning, plain.thinks) == ("plain text <think>", "", False)


def test_the_tools_box_names_what_is_wrong():
    assert parse_tools(json.dumps(EXAMPLE_TOOLS)) == EXAMPLE_TOOLS
    assert parse_tools("  ") is None
    with pytest.raises(DataError) as bad:
        parse_tools('[{"type": "function", "function": {"name": "x"}')
    assert bad.value.code == "chat.tools_json" and "line 1, column" in str(bad.value)
    with pytest.raises(DataError) as nameless:
        parse_tools('[{"type": "function", "function": {"description": "no name"}}]')
    assert nameless.value.code == "chat.tool_no_name"
    with pytest.raises(DataError):
        parse_tools('"get_weather"')


@pytest.mark.parametrize(("name", "template", "form"), CASES)
def test_a_vote_keeps_the_reasoning_and_call_and_trains_them(tokenizer, tmp_path, name, template, form):
    """A vote stores the answers as reply_markup with the prompt's tools; the row read back is encoded by the
    template with the reasoning and the call in place: the same ids as the model's own template writes."""
    reply = read_reply(written_by_model(tokenizer, name, [QUESTION], CALLING), form, done=True)
    chosen = reply_markup(reply, form)
    assert answer_only(chosen).startswith("<tool_call>get_weather") and reasoning_of(chosen) == reply.reasoning
    store = FeedbackStore(tmp_path)
    store.record_column("chat", [QUESTION], [chosen, "不知道。"], ["run", ""], 0, "better", tools=EXAMPLE_TOOLS)
    (row,) = [json.loads(line) for line in (tmp_path / "feedback" / "chat.jsonl").read_text().splitlines()]
    assert row["tools"] == EXAMPLE_TOOLS and reasoning_of(row["chosen"]) == CALLING["reasoning_content"]
    pair = convert_row(row, "alpaca_pairwise")
    encoder = TemplateEncoder(tokenizer, template)
    prompt, completion = encoder.encode_completion(pair.messages[:-1], pair.messages[-1]["content"], "", pair.tools)
    full = tokenizer.apply_chat_template(
        [QUESTION, CALLING],
        tools=EXAMPLE_TOOLS,
        chat_template=(TEMPLATES / f"{name}.jinja").read_text(),
        tokenize=False,
    )
    assert tokenizer.decode(prompt + completion).startswith(full)
    assert CALLING["reasoning_content"] + "</think>" in tokenizer.decode(completion)  # reasoning carries loss


def test_a_streamed_reply_reaches_the_page_coalesced_and_whole(tmp_path, demo_model_dir, monkeypatch):
    """The chat page gets a fast model's reply a few times a second, not once per token (each update redraws the
    whole conversation), and the last update is the whole reply, the same as unstreamed."""
    import time

    from core import workbench as workbench_module
    from core.chat.engine import GenerationSettings
    from core.workbench import Workbench

    monkeypatch.setattr(workbench_module, "STREAM_INTERVAL_S", 0.2)
    wb = Workbench(tmp_path / "ws")
    settings = GenerationSettings(greedy=True, max_new_tokens=256)
    question = [{"role": "user", "content": "你好"}]
    arrivals, replies = [], []
    for reply in wb.chat_replies(question, settings=settings):
        arrivals.append(time.monotonic())
        replies.append(reply)
    whole = wb.chat_engine.chat(question, settings=settings)
    tokens = len(wb.chat_engine.tokenizer(whole, add_special_tokens=False)["input_ids"])
    assert tokens > 100 and len(replies) < tokens / 4  # the untrained demo babbles: many tokens, few redraws
    gaps = [later - earlier for earlier, later in zip(arrivals[:-2], arrivals[1:-1])]
    assert all(gap >= 0.15 for gap in gaps), gaps  # partial updates are spaced; only the last comes at once
    assert replies[-1].content == whole

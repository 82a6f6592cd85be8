"""The GLM-4.5 generation's chat format (template glm4_moe): what we train on equals, token for token, what the
models' own chat templates render (tests/fixtures/templates/, see SOURCES.md there), tools and reasoning included;
the loss falls where the model writes; rows that cannot be trained are named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from core.data import glm45
from core.data.formats import RowError, convert, convert_row
from core.data.template import IGNORE_INDEX, TemplateEncoder, chat_template_jinja, get_template, resolve_template
from core.models.demo import DEMOS, build_tokenizer

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
REAL = {path.stem: path.read_text(encoding="utf-8") for path in sorted(TEMPLATES.glob("GLM-4*.jinja"))}
FAMILY = {"GLM-4.5": "glm4_moe", "GLM-4.6": "glm4_moe", "GLM-4.7-Flash": "glm47"}  # our template for each

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "查询城市天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": {}}}


def call(name: str, arguments: dict) -> dict:
    """An OpenAI tool call as a client sends it: arguments as JSON text."""
    return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


# Each case: an OpenAI-messages row (what a dataset holds) and the keyword arguments of the real template.
CASES = {
    "plain": {"messages": [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "我是小蓝。"}]},
    "system": {
        "messages": [
            {"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
        ]
    },
    "reasoning_content": {
        "messages": [
            {"role": "user", "content": "你是谁？"},
            {"role": "assistant", "content": "我是小蓝，一个助手。", "reasoning_content": "这是身份问题。"},
        ]
    },
    "think_in_content": {
        "messages": [
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "<think>\nsimple sum\n</think>\n\n2"},
        ]
    },
    "multi_turn_drops_earlier_reasoning": {
        "messages": [
            {"role": "user", "content": "第一问"},
            {"role": "assistant", "content": "第一答", "reasoning_content": "先想一想"},
            {"role": "user", "content": "第二问"},
            {"role": "assistant", "content": "<think>再想</think>第二答"},
            {"role": "user", "content": "第三问"},
            {"role": "assistant", "content": "第三答", "reasoning_content": "最后想"},
        ]
    },
    "tool_calls_string_and_json_arguments": {
        "tools": [WEATHER, SEARCH],
        "messages": [
            {"role": "user", "content": "北京和上海两天的天气？"},
            {
                "role": "assistant",
                "content": "我来查一下。",
                "reasoning_content": "需要调用天气工具两次。",
                "tool_calls": [
                    call("get_weather", {"city": "北京", "days": 2}),
                    call("search", {"query": "上海 天气", "filters": {"lang": "zh", "top": [1, 2]}}),
                ],
            },
            {"role": "tool", "tool_call_id": "call_get_weather", "content": "北京：晴，25度"},
            {"role": "tool", "tool_call_id": "call_search", "content": '{"上海": "小雨"}'},
            {"role": "assistant", "content": "北京晴，上海小雨。", "reasoning_content": "两个结果都有了。"},
        ],
    },
    "tool_call_without_content_or_arguments": {
        "tools": [SEARCH],
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "search"},
            {"role": "assistant", "content": None, "tool_calls": [call("search", {})]},
            {"role": "tool", "content": "nothing found"},
            {"role": "assistant", "content": "Nothing found."},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "You're welcome."},
        ],
    },
}


def real_messages(row: dict, thinking: bool = True) -> list[dict]:
    """The row as a chat client hands it to apply_chat_template: arguments parsed (the real templates iterate
    them as a mapping). Without thinking, the messages have no reasoning: the real templates render reasoning that
    is there whatever enable_thinking says, and training with thinking off means training as if there were none."""
    messages = copy.deepcopy(row["messages"])
    for message in messages:
        for tool_call in message.get("tool_calls") or ():
            tool_call["function"]["arguments"] = json.loads(tool_call["function"]["arguments"])
        if not thinking and message["role"] == "assistant":
            message.pop("reasoning_content", None)
            message["content"] = (message["content"] or "").split("</think>")[-1].lstrip("\n")
    return messages


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(DEMOS["demo-moe"])


def render(tokenizer, source: str, row: dict, **kwargs) -> str:
    messages = real_messages(row, kwargs.get("enable_thinking", True))
    return tokenizer.apply_chat_template(
        messages, tools=row.get("tools"), chat_template=source, tokenize=False, **kwargs
    )


def test_the_fixtures_are_the_real_templates():
    assert REAL, "tests/fixtures/templates/ holds the models' own chat templates"
    for name, source in REAL.items():
        assert source.startswith("[gMASK]<sop>") and "<arg_key>" in source, name


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("real", REAL)
def test_training_ids_equal_the_real_template(tokenizer, real, case, thinking):
    row = CASES[case]
    conversation = convert_row(row, "openai")
    template = resolve_template(FAMILY[real], tokenizer, enable_thinking=thinking)
    ids, labels = TemplateEncoder(tokenizer, template).encode(conversation, 10**9)
    kwargs = {} if thinking else {"enable_thinking": False}
    expected = tokenizer.encode(render(tokenizer, REAL[real], row, **kwargs), add_special_tokens=False)
    assert ids[:-1] == expected
    assert ids[-1] == labels[-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")  # learn to stop
    # Our own Jinja (saved with the tokenizers we write) renders the same text.
    ours = render(tokenizer, chat_template_jinja(FAMILY[real]), row, **kwargs)
    assert ours == render(tokenizer, REAL[real], row, **kwargs)


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("real", REAL)
def test_generation_prompt_equals_the_real_template(tokenizer, real, case, thinking):
    """Every point where the model speaks next: after each user turn and after each run of tool results."""
    row = CASES[case]
    template = get_template(resolve_template(FAMILY[real], tokenizer, enable_thinking=thinking))
    encoder = TemplateEncoder(tokenizer, template)
    kwargs = {} if thinking else {"enable_thinking": False}
    conversation = convert_row(row, "openai")
    messages = conversation.messages
    system = [m for m in row["messages"] if m["role"] == "system"]  # the row's own list: system first, then turns
    turns = row["messages"][len(system) :]
    for end in range(1, len(messages)):
        if messages[end]["role"] != "assistant":
            continue
        history = {**row, "messages": system + turns[:end]}
        text = render(tokenizer, REAL[real], history, add_generation_prompt=True, **kwargs)
        prompt = encoder.encode_prompt(messages[:end], conversation.system, conversation.tools)
        assert prompt == tokenizer.encode(text, add_special_tokens=False), (case, end)


def test_loss_falls_on_what_the_model_writes(tokenizer):
    row = CASES["tool_calls_string_and_json_arguments"]
    ids, labels = TemplateEncoder(tokenizer, "glm4_moe").encode(convert_row(row, "openai"), 10**9)
    trained = tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])
    ignored = tokenizer.decode([i for i, label in zip(ids, labels) if label == IGNORE_INDEX])
    for written in (
        "需要调用天气工具两次。",
        "<tool_call>get_weather",
        "<arg_value>北京</arg_value>",
        "2</arg_value>",
        '{"lang": "zh", "top": [1, 2]}',
        "两个结果都有了。",
        "北京晴，上海小雨。",
        "<|observation|>",
    ):
        assert written in trained, written
    for read in ("北京：晴，25度", '小雨"}', "# Tools", "北京和上海两天的天气？", "<tool_response>"):
        assert read in ignored and read not in trained, read


def test_earlier_turns_train_their_answers_but_not_their_empty_think(tokenizer):
    row = CASES["multi_turn_drops_earlier_reasoning"]
    ids, labels = TemplateEncoder(tokenizer, "glm4_moe").encode(convert_row(row, "openai"), 10**9)
    trained = tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert "第一答" in trained and "第二答" in trained and "最后想" in trained
    assert "先想一想" not in tokenizer.decode(ids) and "再想" not in tokenizer.decode(ids)  # dropped as the real one
    assert trained.count("<think></think>") == 0 and tokenizer.decode(ids).count("<think></think>") == 2


def test_thinking_off_trains_the_empty_think_as_prompt(tokenizer):
    row = CASES["reasoning_content"]
    template = resolve_template("glm4_moe", tokenizer, enable_thinking=False)
    assert template == "glm4_moe/nothink"
    ids, labels = TemplateEncoder(tokenizer, template).encode(convert_row(row, "openai"), 10**9)
    trained = tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert "这是身份问题" not in tokenizer.decode(ids) and "<think>" not in trained
    assert "/nothink" in tokenizer.decode(ids) and trained.startswith("\n我是小蓝")


def test_auto_picks_the_generation_from_the_tokenizer_and_its_own_template(tokenizer):
    assert resolve_template("auto", tokenizer) == "glm4_moe"
    assert resolve_template("auto", build_tokenizer(DEMOS["demo"])) == "glm4"
    for real, family in FAMILY.items():
        flash = copy.copy(tokenizer)
        flash.chat_template = REAL[real]
        assert resolve_template("auto", flash) == family, real


def test_llamafactory_template_names_mean_ours():
    from core.config import from_llamafactory

    for theirs, ours in (("glm4_moe", "glm4_moe"), ("glm4_7", "glm47"), ("glmz1", "glmz1")):
        data, _ = from_llamafactory({"stage": "sft", "template": theirs})
        assert data["template"] == ours


BAD_ROWS = [
    (
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "get_weather", "arguments": "{"}}]},
        "message 2: the arguments of the call to 'get_weather' must be a JSON object",
    ),
    (
        {"role": "assistant", "content": "", "tool_calls": [call("delete_everything", {})]},
        "message 2 calls 'delete_everything', which is not among the row's tools (get_weather, search)",
    ),
    (
        {"role": "tool", "content": "orphan result"},
        "message 2 is a tool result, but the message before it calls no tool",
    ),
    ({"role": "assistant", "content": "x", "reasoning_content": 42}, "message 2: reasoning_content must be text"),
]


def test_malformed_tool_rows_are_row_problems_with_their_number():
    good = CASES["tool_calls_string_and_json_arguments"]
    rows = [good]
    for bad, _ in BAD_ROWS:
        rows.append({"tools": [WEATHER, SEARCH], "messages": [{"role": "user", "content": "q"}, bad]})
    result = convert(rows, "openai")
    assert len(result.conversations) == 1
    found = {problem.row: problem.render("en") for problem in result.problems}
    for row, (_, expected) in enumerate(BAD_ROWS, start=2):
        assert expected in found[row], found[row]


def test_llamafactory_sharegpt_tool_rows_and_an_alpaca_reasoning_column():
    row = {
        "conversations": [
            {"from": "human", "value": "北京天气？"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "北京"}})},
            {"from": "observation", "value": "晴"},
            {"from": "gpt", "value": "晴天。"},
        ],
        "tools": json.dumps([WEATHER["function"]]),
    }
    conversation = convert_row(row, "sharegpt")
    assert conversation.messages[1]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "北京"}}]
    assert [m["role"] for m in conversation.messages] == ["user", "assistant", "tool", "assistant"]
    assert conversation.tools == [WEATHER["function"]]
    alpaca = convert_row({"instruction": "q", "output": "a", "reasoning": "r"}, "alpaca")
    assert alpaca.messages[-1] == {"role": "assistant", "content": "a", "reasoning": "r"}


def test_a_template_without_tools_names_the_row_instead_of_dropping_them(tokenizer):
    dense = build_tokenizer(DEMOS["demo"])
    for case, code in (
        ("tool_calls_string_and_json_arguments", "row.template_no_tools"),
        ("reasoning_content", "row.template_no_reasoning"),
    ):
        with pytest.raises(RowError) as caught:
            TemplateEncoder(dense, "glm4").encode(convert_row(CASES[case], "openai"), 10**9)
        assert caught.value.message.code == code
        assert "glm4_moe" in caught.value.message.render("en")


def test_jinja_is_generated_from_the_same_definition():
    assert chat_template_jinja("glm4_moe") == glm45.jinja(get_template("glm4_moe").thinking)


def test_tool_rows_on_a_model_without_tools_stop_the_run_naming_file_and_row(tmp_path, demo_model_dir):
    from core.config import RunConfig
    from core.training.runner import TrainingSession

    status = TrainingSession(RunConfig(dataset="tool_calls"), tmp_path / "run").run()
    assert status["state"] == "failed"
    assert "tool_calls.json" in status["error"] and "row 1" in status["error"], status["error"]
    assert "glm4_moe" in status["error"]


def test_the_data_tab_renders_tools_reasoning_and_calls_with_their_loss(tmp_path):
    from core.workbench import Workbench

    wb = Workbench(tmp_path)
    template, pieces = wb.render_sample("tool_calls", "auto", "demo-moe", "auto", 0)
    assert template == "glm4_moe"
    trained = "".join(text for text, loss in pieces if loss)
    prompt = "".join(text for text, loss in pieces if not loss)
    assert "# Tools" in prompt and '"get_weather"' in prompt and "<tool_response>" in prompt
    assert "<think>用户想知道北京的天气" in trained and "<tool_call>get_weather" in trained


@pytest.mark.parametrize("template", ["glm4_moe", "glm47", "glm4_moe/nothink", "glm47/nothink"])
def test_a_preference_pair_splits_where_training_does(tokenizer, template):
    """DPO's prompt + completion is exactly SFT's sequence, also for GLM-4.7 (whose prompt opens `<think>` while an
    answer without reasoning starts with `</think>`)."""
    encoder = TemplateEncoder(tokenizer, get_template(template))
    for answer in ("我是小蓝。", "<think>想一想</think>我是小蓝。"):
        prompt, completion = encoder.encode_completion([{"role": "user", "content": "你是谁？"}], answer)
        full, labels = encoder.encode(
            convert_row(
                {"messages": [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": answer}]},
                "openai",
            ),
            10**9,
        )
        assert prompt + completion == full
        assert all(label == -100 for label in labels[: len(prompt)])

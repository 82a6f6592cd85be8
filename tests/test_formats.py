"""Every supported format is detected and becomes the same conversation form; bad rows are reported by number."""

from __future__ import annotations

import pytest

from core.data.formats import convert, detect_format
from core.data.readers import DataError

QA = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
TWO_TURNS = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you"},
]


@pytest.mark.parametrize(
    "row, fmt, messages, system",
    [
        ({"instruction": "你好", "input": "", "output": "你好！"}, "alpaca", QA, ""),
        (
            {"instruction": "Translate", "input": "猫", "output": "cat", "system": "Be brief"},
            "alpaca",
            [{"role": "user", "content": "Translate\n猫"}, {"role": "assistant", "content": "cat"}],
            "Be brief",
        ),
        ({"instruction": "Bye", "output": "See you", "history": [["Hi", "Hello"]]}, "alpaca", TWO_TURNS, ""),
        (
            {
                "conversations": [
                    {"from": "system", "value": "S"},
                    {"from": "human", "value": "你好"},
                    {"from": "gpt", "value": "你好！"},
                ]
            },
            "sharegpt",
            QA,
            "S",
        ),
        (
            {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]},
            "openai",
            QA,
            "",
        ),
        ({"content": "你好", "summary": "你好！"}, "advertisegen", QA, ""),
        ({"prompt": "Bye", "response": "See you", "history": [["Hi", "Hello"]]}, "chatglm", TWO_TURNS, ""),
    ],
)
def test_formats_convert_to_conversations(row, fmt, messages, system):
    assert detect_format([row]) == fmt
    result = convert([row])
    assert result.format == fmt and not result.problems
    assert result.conversations[0].messages == messages
    assert result.conversations[0].system == system


def test_unknown_columns_are_listed():
    with pytest.raises(DataError) as error:
        detect_format([{"question": "a", "answer": "b"}])
    assert "unknown columns: answer, question" in str(error.value)
    assert "alpaca: instruction, output" in str(error.value)


def test_bad_rows_are_reported_and_skipped():
    rows = [
        {"instruction": "ok", "output": "fine"},
        {"instruction": "no answer", "output": None},
        {"instruction": ["not", "text"], "output": "x"},
        {"instruction": "missing output"},
    ]
    result = convert(rows)
    assert len(result.conversations) == 1
    assert [str(p) for p in result.problems] == [
        "row 2: field 'output' is empty (null)",
        "row 3: field 'instruction' must be text, got list",
        "row 4: missing field 'output'",
    ]


def test_conversation_ending_with_user_is_rejected():
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    }
    result = convert([row, {"messages": QA}])
    assert [str(p) for p in result.problems] == [
        "row 1: the conversation ends with a user turn: there is no answer to learn"
    ]


def test_explicit_format_override_and_all_rows_bad():
    with pytest.raises(DataError, match="no usable rows for format 'chatglm'"):
        convert([{"instruction": "a", "output": "b"}], "chatglm")


def test_column_mapping_renames_a_files_own_columns():
    from core.data.formats import parse_columns, rename_columns

    mapping = parse_columns("question=instruction，answer = output")  # a full-width comma too
    assert mapping == {"question": "instruction", "answer": "output"}
    rows = rename_columns([{"question": "q", "answer": "a", "output": "old"}], mapping)
    assert rows == [{"instruction": "q", "output": "a"}]  # a mapped column replaces one already so named
    assert convert(rows).format == "alpaca"
    for bad, message in (
        ("question", "write it as your_column=standard_column"),
        ("question=query", "'query' is not a column any format reads"),
    ):
        with pytest.raises(DataError, match=message):
            parse_columns(bad)


def test_a_mapping_left_filled_in_does_not_break_files_with_standard_names():
    from core.data.formats import parse_columns, rename_columns

    mapping = parse_columns("question=instruction, answer=output")
    rows = [{"instruction": "你好", "output": "你好！"}]
    assert rename_columns(rows, mapping) == rows
    with pytest.raises(DataError, match="another column is already mapped to 'instruction'"):
        parse_columns("q=instruction, question=instruction")

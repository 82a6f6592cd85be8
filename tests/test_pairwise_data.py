"""Pairwise data: the formats users have load as the same pairs, bad pairs are row problems, and the ids a
preference run trains on are exactly what SFT trains on and what the chat feeds the model."""

from __future__ import annotations

import json

import pytest

from core.data.formats import Conversation, convert
from core.data.pairs import check_preference_rows, encode_preferences
from core.data.template import IGNORE_INDEX, TemplateEncoder
from core.errors import DataError
from core.stages import get_stage
from webui.locale import Translator

HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
PROMPT = [*HISTORY, {"role": "user", "content": "Who are you?"}]


@pytest.mark.parametrize(
    "row, fmt",
    [
        (
            {
                "instruction": "Who are you?",
                "input": "",
                "chosen": "Xiaozhi.",
                "rejected": "No idea.",
                "history": [["Hi", "Hello"]],
                "system": "S",
            },
            "alpaca_pairwise",
        ),
        (
            {
                "conversations": [
                    {"from": "system", "value": "S"},
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello"},
                    {"from": "human", "value": "Who are you?"},
                ],
                "chosen": {"from": "gpt", "value": "Xiaozhi."},
                "rejected": {"from": "gpt", "value": "No idea."},
            },
            "sharegpt_pairwise",
        ),
        (
            {
                "messages": [{"role": "system", "content": "S"}, *PROMPT],
                "chosen": {"role": "assistant", "content": "Xiaozhi."},
                "rejected": [{"role": "assistant", "content": "No idea."}],
            },
            "openai_pairwise",
        ),
        (
            {
                "prompt": [{"role": "system", "content": "S"}, *PROMPT],
                "chosen": [{"role": "assistant", "content": "Xiaozhi."}],
                "rejected": [{"role": "assistant", "content": "No idea."}],
            },
            "trl_pairwise",
        ),
    ],
)
def test_every_pairwise_format_becomes_the_same_pair(row, fmt):
    result = convert([row])
    assert result.format == fmt and not result.problems
    (pair,) = result.conversations
    assert pair.messages == [*PROMPT, {"role": "assistant", "content": "Xiaozhi."}]
    assert (pair.rejected, pair.system, pair.is_pair) == ("No idea.", "S", True)


def test_bad_pairs_are_reported_row_by_row():
    good = {"instruction": "q", "chosen": "a", "rejected": "b"}
    rows = [
        good,
        {"instruction": "q", "chosen": "same", "rejected": " same "},
        {"instruction": "q", "chosen": "a", "rejected": ""},
        {"instruction": "q", "chosen": "", "rejected": "b"},
        {"instruction": "q", "chosen": "a", "rejected": None},
        {"instruction": "q", "chosen": {"role": "user", "content": "a"}, "rejected": "b"},
        {"instruction": "q", "chosen": ["a", "b"], "rejected": "b"},
    ]
    result = convert(rows)
    assert len(result.conversations) == 1
    assert [str(problem) for problem in result.problems] == [
        "row 2: chosen and rejected are the same answer: there is nothing to prefer",
        "row 3: the rejected answer is empty",
        "row 4: the last answer is empty",
        "row 5: missing field 'rejected'",
        "row 6: field 'chosen' must be the assistant's answer, but its role is 'user'",
        "row 7: field 'chosen' must be text, got list",
    ]
    for problem in result.problems:
        assert problem.render("zh") != str(problem)
    asked = [{"role": "user", "content": "q"}]
    answered = [*asked, {"role": "assistant", "content": "a"}]
    openai = [
        {"messages": asked, "chosen": "a", "rejected": "b"},
        {"messages": answered, "chosen": "a", "rejected": "b"},
    ]
    assert [str(problem) for problem in convert(openai).problems] == [
        "row 2: the prompt ends with an answer: in a pairwise row the messages end with the user's question, "
        "and chosen / rejected hold the two answers"
    ]


def test_kto_tag_marks_an_answer_and_an_sft_file_is_refused_for_dpo(tmp_path):
    tagged = convert([{"instruction": "q", "output": "a", "kto_tag": False}, {"instruction": "q", "output": "b"}])
    assert [c.label for c in tagged.conversations] == [False, None]
    bad_tag = [{"instruction": "q", "output": "a", "kto_tag": "yes"}, {"instruction": "q", "output": "a"}]
    assert str(convert(bad_tag).problems[0]) == ("row 1: field 'kto_tag' must be true or false, got 'yes'")
    sft = tmp_path / "sft.json"
    sft.write_text(json.dumps([{"instruction": "q", "output": "a"}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"sft.json: no row holds a preference pair \(format alpaca\): dpo needs") as e:
        check_preference_rows(str(sft), get_stage("dpo"))
    assert "alpaca" in Translator("zh").message(e.value)
    with pytest.raises(DataError, match="no row holds a preference pair or a kto_tag"):
        check_preference_rows(str(sft), get_stage("kto"))
    check_preference_rows("identity_pairs", get_stage("kto"))


def test_pairs_are_tokenized_as_sft_trains_and_chat_prompts(demo_tokenizer):
    """prompt_ids are the chat's prompt; prompt + chosen_ids are SFT's ids for the chosen conversation, and the
    completion is exactly the part SFT puts loss on (the last answer and its end token)."""
    encoder = TemplateEncoder(demo_tokenizer, "glm4")
    pair = Conversation([*PROMPT, {"role": "assistant", "content": "Xiaozhi."}], "S", rejected="No idea.")
    (sample,) = encode_preferences([pair], demo_tokenizer, "glm4", 512, get_stage("dpo")).train
    assert sample["prompt_ids"] == encoder.encode_prompt(PROMPT, "S")
    sft_ids, sft_labels = encoder.encode(pair, 512)
    assert sample["prompt_ids"] + sample["chosen_ids"] == sft_ids
    last_answer = len(sample["prompt_ids"])
    assert sft_labels[last_answer:] == sample["chosen_ids"]
    assert all(label == IGNORE_INDEX for label in sft_labels[last_answer - 3 : last_answer])
    assert demo_tokenizer.decode(sample["chosen_ids"]) == "Xiaozhi.<|endoftext|>"
    assert demo_tokenizer.decode(sample["rejected_ids"]) == "No idea.<|endoftext|>"
    kto = encode_preferences([pair], demo_tokenizer, "glm4", 512, get_stage("kto")).train
    assert sorted((s["label"], s["completion_ids"] == sample["chosen_ids"]) for s in kto) == [
        (False, False),
        (True, True),
    ]


def test_cutoff_keeps_the_prompt_and_cuts_both_answers(demo_tokenizer):
    long_answer = "很长的回答。" * 40
    pair = Conversation([*PROMPT, {"role": "assistant", "content": long_answer}], rejected="短。")
    prompt_len = len(TemplateEncoder(demo_tokenizer, "glm4").encode_prompt(PROMPT))
    data = encode_preferences([pair, pair], demo_tokenizer, "glm4", prompt_len + 5, get_stage("dpo"), val_size=1)
    assert (len(data.train), len(data.eval), data.truncated) == (1, 1, 2)
    assert len(data.train[0]["chosen_ids"]) == 5 and data.train[0]["prompt_ids"] == data.eval[0]["prompt_ids"]
    data = encode_preferences(
        [pair, Conversation(PROMPT[:1] + [PROMPT[1]])], demo_tokenizer, "glm4", 512, get_stage("orpo")
    )
    assert [str(p) for p in data.problems] == [
        "row 2: no chosen / rejected pair in this row: preference training skips it"
    ]
    with pytest.raises(DataError, match="no row holds a preference pair"):
        encode_preferences([pair], demo_tokenizer, "glm4", prompt_len, get_stage("dpo"))

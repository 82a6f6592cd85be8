"""The GLM-4 template: exact token layout, and loss only on the assistant's replies and their end tokens."""

from __future__ import annotations

from core.data.formats import Conversation
from core.data.template import IGNORE_INDEX, TemplateEncoder

TWO_TURNS = Conversation(
    [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am Xiaozhi."},
    ],
    system="Be kind.",
)


def test_two_turn_sample_carries_loss_exactly_on_answers(demo_tokenizer):
    encoder = TemplateEncoder(demo_tokenizer, "glm4")
    input_ids, labels = encoder.encode(TWO_TURNS, cutoff_len=1024)
    tokens = [demo_tokenizer.decode([i]) for i in input_ids]
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    # Labels equal the inputs wherever they count (the model shifts them itself).
    assert all(labels[i] == input_ids[i] for i in trained)

    def text_of(positions: list[int]) -> str:
        return demo_tokenizer.decode([input_ids[i] for i in positions])

    # Which positions carry loss: the first answer plus the <|user|> that closes it, then the second answer
    # plus the final <|endoftext|>. Nothing of the system prompt, the questions or the role headers.
    first_user = tokens.index("<|user|>")
    second_user = tokens.index("<|user|>", first_user + 1)
    first_assistant = tokens.index("<|assistant|>")
    second_assistant = tokens.index("<|assistant|>", first_assistant + 1)
    first_answer = list(range(first_assistant + 2, second_user + 1))
    second_answer = list(range(second_assistant + 2, len(tokens)))
    assert trained == first_answer + second_answer
    assert text_of(first_answer) == "你好！<|user|>"
    assert text_of(second_answer) == "I am Xiaozhi.<|endoftext|>"
    assert "".join(tokens[:first_user]) == "[gMASK]<sop><|system|>\nBe kind."


def test_prompt_matches_the_tokenizers_own_chat_template(demo_tokenizer):
    encoder = TemplateEncoder(demo_tokenizer, "glm4")
    messages = [{"role": "system", "content": "Be kind."}] + TWO_TURNS.messages[:3]
    expected = demo_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = list(expected["input_ids"]) if hasattr(expected, "keys") else list(expected)
    assert encoder.encode_prompt(TWO_TURNS.messages[:3], system="Be kind.") == expected


def test_truncation_at_cutoff_len(demo_tokenizer):
    encoder = TemplateEncoder(demo_tokenizer, "glm4")
    input_ids, labels = encoder.encode(TWO_TURNS, cutoff_len=10)
    assert len(input_ids) == len(labels) == 10

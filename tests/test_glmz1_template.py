"""GLM-Z1-0414 (a dense Glm4ForCausalLM that always thinks): `glmz1` trains and prompts as the model's own template.

The fixtures: GLM-Z1-Rumination-32B-0414's template, public and quoted as published, and GLM-Z1-9B/32B-0414's,
rebuilt around the same message loop (tests/fixtures/templates/SOURCES.md says from what). The tokenizer is the
dense demo's: like GLM-Z1's, it has GLM's role tokens as special tokens and no `<think>` token, so `<think>` is
plain text that the tokenizer splits into pieces.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from core.config import RunConfig, from_llamafactory
from core.data import glm45
from core.data.formats import Conversation, RowError, convert_row
from core.data.template import IGNORE_INDEX, TemplateEncoder, chat_template_jinja, resolve_template
from core.models.demo import DEMOS, build_tokenizer

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
Z1 = (TEMPLATES / "GLM-Z1-0414.jinja").read_text(encoding="utf-8")
RUMINATION = (TEMPLATES / "GLM-Z1-Rumination-32B-0414.jinja").read_text(encoding="utf-8")
LOOP_START = "{%- for message in messages if message.role != 'system' %}"

# Rows whose trained turn has no reasoning: they train exactly as the template renders them.
PLAIN = {
    "plain": [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "我是小蓝。"}],
    "system": [
        {"role": "system", "content": "你是一个乐于助人的助手。"},
        {"role": "user", "content": "  Hello \n"},
        {"role": "assistant", "content": "Hi! How can I help?"},
    ],
    "earlier_reasoning_dropped": [
        {"role": "user", "content": "第一问"},
        {"role": "assistant", "content": "第一答", "reasoning_content": "先想一想"},
        {"role": "user", "content": "第二问"},
        {"role": "assistant", "content": "<think>再想</think>\n\n第二答"},
        {"role": "user", "content": "第三问"},
        {"role": "assistant", "content": "第三答"},
    ],
}
# Rows whose trained turn thinks: the template's generation prompt, then what the model writes.
THINKING = {
    "reasoning_content": [
        {"role": "user", "content": "你是谁？"},
        {"role": "assistant", "content": "我是小蓝，一个助手。", "reasoning_content": "这是身份问题。"},
    ],
    "think_in_content": [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>\nsimple sum\n</think>\n\n2"},
    ],
    "multi_turn": [
        {"role": "system", "content": "简洁回答。"},
        {"role": "user", "content": "第一问"},
        {"role": "assistant", "content": "<think>先想</think>第一答"},
        {"role": "user", "content": "第二问"},
        {"role": "assistant", "content": "第二答", "reasoning_content": "再想一想"},
    ],
}


@pytest.fixture(scope="module")
def tokenizer():
    found = build_tokenizer(DEMOS["demo"])
    assert "<think>" not in found.get_vocab()  # as in GLM-Z1's tokenizer (GLM-4-0414's 14 special tokens)
    found.chat_template = Z1
    return found


def as_client_sends(messages: list[dict]) -> list[dict]:
    """The messages as GLM-Z1's users hand them to apply_chat_template: reasoning inside the content."""
    sent = copy.deepcopy(messages)
    for message in sent:
        if "reasoning_content" in message:
            message["content"] = f"<think>{message.pop('reasoning_content')}</think>{message['content']}"
    return sent


def real_ids(tokenizer, messages: list[dict], source: str = Z1, **kwargs) -> list[int]:
    text = tokenizer.apply_chat_template(as_client_sends(messages), chat_template=source, tokenize=False, **kwargs)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode(tokenizer, messages: list[dict], template: str = "glmz1") -> tuple[list[int], list[int]]:
    row = convert_row({"messages": messages}, "openai")
    return TemplateEncoder(tokenizer, template).encode(row, 10**9)


def test_the_rebuilt_template_keeps_the_public_message_loop():
    """GLM-Z1-9B/32B's template is rebuilt; its message loop is byte for byte the published Rumination one."""
    loop = RUMINATION[RUMINATION.index(LOOP_START) : RUMINATION.index("{% if add_generation_prompt %}")]
    assert "content.split('</think>')[-1].strip()" in loop
    assert Z1.index(LOOP_START) > 0 and loop in Z1
    assert Z1.startswith("[gMASK]<sop>{%- if tools -%}")
    assert Z1.endswith("{% if add_generation_prompt %}<|assistant|>\n<think>{% endif %}")


@pytest.mark.parametrize("case", sorted(PLAIN))
def test_rows_without_new_reasoning_train_as_the_template_renders_them(tokenizer, case):
    ids, labels = encode(tokenizer, PLAIN[case])
    assert ids[:-1] == real_ids(tokenizer, PLAIN[case])
    assert ids[-1] == labels[-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    trained = tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert "先想一想" not in tokenizer.decode(ids) and "再想" not in tokenizer.decode(ids)
    assert PLAIN[case][-1]["content"] in trained and "你是" not in trained and "Hello" not in trained


@pytest.mark.parametrize("case", sorted(THINKING))
def test_a_thinking_turn_trains_after_the_templates_own_generation_prompt(tokenizer, case):
    messages = THINKING[case]
    ids, labels = encode(tokenizer, messages)
    prompt = real_ids(tokenizer, messages[:-1], add_generation_prompt=True)
    assert ids[: len(prompt)] == prompt  # what the model sees when it is asked, earlier reasoning dropped
    # Inside the prompt only an earlier turn's answer (and the role token that ends it) is learned, as on every
    # template; its reasoning is not there to learn.
    earlier = tokenizer.decode([i for i, label in zip(ids[: len(prompt)], labels) if label != IGNORE_INDEX])
    assert earlier == ("\n第一答<|user|>" if case == "multi_turn" else "")
    assert labels[len(prompt) :] == ids[len(prompt) :]
    reasoning, answer = glm45.split_reasoning(convert_row({"messages": messages}, "openai").messages[-1])
    written = tokenizer.decode(ids[len(prompt) :])
    assert written == f"{reasoning.strip()}</think>\n{answer.strip()}<|endoftext|>"


def test_the_chat_prompt_is_the_templates_and_thinking_off_drops_its_think(tokenizer):
    history = THINKING["multi_turn"] + [{"role": "user", "content": "第三问"}]
    row = convert_row({"messages": history + [{"role": "assistant", "content": "x"}]}, "openai")
    asked = dict(messages=row.messages[:-1], system=row.system)
    assert TemplateEncoder(tokenizer, "glmz1").encode_prompt(**asked) == real_ids(
        tokenizer, history, add_generation_prompt=True
    )
    # Thinking off is the maintainers' own recipe: the template without the `<think>` of its last line.
    plain = Z1.removesuffix("<think>{% endif %}") + "{% endif %}"
    off = resolve_template("glmz1", tokenizer, enable_thinking=False)
    assert off == "glmz1/nothink"
    assert TemplateEncoder(tokenizer, off).encode_prompt(**asked) == real_ids(
        tokenizer, history, plain, add_generation_prompt=True
    )
    ids, labels = encode(tokenizer, THINKING["reasoning_content"], off)
    assert ids[:-1] == real_ids(
        tokenizer, [THINKING["reasoning_content"][0], {"role": "assistant", "content": "我是小蓝，一个助手。"}], plain
    )
    assert (
        tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])
        == "我是小蓝，一个助手。<|endoftext|>"
    )


def test_the_generated_jinja_renders_what_training_encodes(tokenizer):
    ours = copy.copy(tokenizer)
    ours.chat_template = chat_template_jinja("glmz1")
    for messages in [*PLAIN.values(), *THINKING.values()]:
        ids, _ = encode(tokenizer, messages)
        text = ours.apply_chat_template(messages, tokenize=False)
        assert tokenizer.decode(ids[:-1]) == text
    question = [{"role": "user", "content": "q"}]
    assert ours.apply_chat_template(question, tokenize=False, add_generation_prompt=True) == tokenizer.decode(
        real_ids(tokenizer, question, add_generation_prompt=True)
    )


def test_auto_and_llamafactory_name_pick_glmz1(tokenizer):
    assert resolve_template("auto", tokenizer) == "glmz1"
    rumination = copy.copy(tokenizer)
    rumination.chat_template = RUMINATION  # no <think> in its prompt: GLM-4-0414's format
    assert resolve_template("auto", rumination) == "glm4"
    assert resolve_template("auto", build_tokenizer(DEMOS["demo"])) == "glm4"
    data, _ = from_llamafactory({"stage": "sft", "template": "glmz1"})
    assert data["template"] == "glmz1"


def test_a_reply_is_taken_apart_at_its_think_end():
    reply = glm45.parse_reply("先算一下。\n</think>\n2", glm45.GLMZ1)
    assert (reply.reasoning, reply.content, reply.tool_calls) == ("先算一下。", "2", [])


def test_tools_are_a_row_problem_not_a_crash(tokenizer):
    row = Conversation(
        [{"role": "user", "content": "天气？"}, {"role": "assistant", "content": "晴"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    )
    with pytest.raises(RowError) as refused:
        TemplateEncoder(tokenizer, "glmz1").encode(row, 100)
    assert refused.value.message.code == "row.template_no_tools"
    assert "message 1 has tools" in refused.value.message.render("en") and "glmz1" in refused.value.message.render("en")


def test_a_glm_z1_model_trains_its_reasoning_rows_with_none_skipped(tmp_path, demo_model_dir, tokenizer):
    """A GLM-Z1-shaped model (Glm4ForCausalLM, GLM-Z1's template) picks glmz1 by itself, keeps every reasoning row
    and learns them."""
    from core.training.runner import TrainingSession

    model = tmp_path / "glm-z1-tiny"
    shutil.copytree(demo_model_dir, model)
    tokenizer.save_pretrained(model)  # the demo's tokenizer with GLM-Z1's chat template
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{a}+{b}=?"},
                {"role": "assistant", "content": f"{a + b}", "reasoning_content": f"{a} 加 {b} 等于 {a + b}。"},
            ]
        }
        for a in range(1, 5)
        for b in range(1, 5)
    ]
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    config = RunConfig(
        model_name_or_path=str(model),
        dataset=str(data),
        learning_rate=5e-3,
        max_steps=24,
        per_device_train_batch_size=4,
    )
    status = TrainingSession(config, tmp_path / "run").run()
    assert status["state"] == "finished", status
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "template glmz1, 16 train / 0 eval samples, 0 truncated" in log
    assert not (tmp_path / "run" / "skipped_rows.txt").exists()
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "loss" in line
    ]
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4]), losses


def test_with_thinking_off_a_reply_still_being_written_is_all_answer():
    """GLM-Z1's (and GLM-4.7's) prompt opens the reasoning, so a reply starts inside it, unless thinking is off."""
    from core.chat.turns import partial_reply

    assert partial_reply("想到一半", glm45.GLMZ1) == glm45.Reply("想到一半", "", [])
    off = dataclasses.replace(glm45.GLMZ1, enabled=False)
    assert partial_reply("答案写到一半", off) == glm45.Reply("", "答案写到一半", [])
    assert glm45.parse_reply("答案", off) == glm45.Reply("", "答案", [])


def test_the_chat_engine_prompts_glm_z1_as_its_template_and_refuses_tools(tmp_path, demo_model_dir, tokenizer):
    from core.chat.engine import ChatEngine
    from core.errors import ModelError

    model = tmp_path / "glm-z1-tiny"
    shutil.copytree(demo_model_dir, model)
    tokenizer.save_pretrained(model)
    engine = ChatEngine()
    engine.load_model(str(model))
    question = [{"role": "user", "content": "1+1?"}]
    assert engine.prompt_ids(question) == real_ids(tokenizer, question, add_generation_prompt=True)
    assert tokenizer.decode(engine.prompt_ids(question, enable_thinking=False)).endswith("<|assistant|>\n")
    assert not engine.takes_tools
    assert engine.reading(True).opens_thinking() and not engine.reading(False).opens_thinking()
    with pytest.raises(ModelError) as refused:
        engine.prompt_ids(question, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert refused.value.message.code == "model.template_no_tools"

"""Distillation: a smaller student learns the fine-tuned teacher's answers (logits), or from teacher-written
answers when the tokenizers differ (sequence)."""

from __future__ import annotations

import pytest
import torch

from core.chat.engine import ChatEngine, GenerationSettings
from core.config import RunConfig
from core.data.dataset import load_conversations
from core.data.template import TemplateEncoder
from core.methods import distill
from core.models.loader import load_tokenizer
from core.runs import read_metrics
from core.training.runner import TrainingSession

GREEDY = GenerationSettings(greedy=True, max_new_tokens=40)


def greedy_answers(model, tokenizer, conversations) -> list[str]:
    encoder = TemplateEncoder(tokenizer, "glm4")
    answers = []
    for conversation in conversations:
        prompt = torch.tensor([encoder.encode_prompt(conversation.messages[:-1])])
        with torch.inference_mode():
            output = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=40,
                eos_token_id=encoder.stop_token_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers.append(tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True).strip())
    return answers


@pytest.fixture(scope="module")
def teacher_run(identity_run_dir):
    """The session's LoRA run on the identity set (tests/conftest.py): the teacher."""
    return identity_run_dir


def test_logit_distillation_makes_the_student_agree_with_the_teacher(teacher_run, tmp_path, demo_model_dir):
    config = RunConfig(
        finetuning_type="distill",
        teacher_adapter=str(teacher_run),
        dataset="identity",
        learning_rate=1e-3,
        num_train_epochs=10,
    )
    tokenizer = load_tokenizer(str(demo_model_dir))
    prompts = load_conversations("identity").conversations[:12]
    teacher, _ = distill.load_teacher(config, "cpu")
    teacher_says = greedy_answers(teacher, tokenizer, prompts)
    student_before, _ = distill.build_student(teacher, config, "cpu")
    assert student_before.config.num_hidden_layers == teacher.config.num_hidden_layers // 2
    agree_before = sum(a == b for a, b in zip(greedy_answers(student_before.eval(), tokenizer, prompts), teacher_says))

    status = TrainingSession(config, tmp_path / "student").run()
    assert status["state"] == "finished" and status["distill_mode"] == "logits"
    engine = ChatEngine()
    engine.load_model(str(tmp_path / "student" / "model"))
    agree_after = sum(
        engine.chat(c.messages[:-1], settings=GREEDY) == answer for c, answer in zip(prompts, teacher_says)
    )
    assert agree_before <= 2 and agree_after >= 10, (agree_before, agree_after)


def test_sequence_distillation_with_a_different_tokenizer(teacher_run, tmp_path):
    from core.models.chatglm import convert_chatglm
    from tests.chatglm_fixtures import write_thudm_checkpoint

    write_thudm_checkpoint(tmp_path / "thudm", "glm4-chat")
    convert_chatglm(tmp_path / "thudm", tmp_path / "small-student")
    config = RunConfig(
        finetuning_type="distill",
        teacher_adapter=str(teacher_run),
        dataset="identity",
        student_model=str(tmp_path / "small-student"),
        learning_rate=3e-3,
        num_train_epochs=4,
        max_samples=20,
    )
    status = TrainingSession(config, tmp_path / "student").run()
    assert status["state"] == "finished", status
    assert status["distill_mode"] == "sequence"
    losses = [m["loss"] for m in read_metrics(tmp_path / "student") if "loss" in m]
    assert losses[-1] < losses[0]
    refused = TrainingSession(config.replace(distill_mode="logits"), tmp_path / "logits").run()
    assert refused["state"] == "failed" and "share a tokenizer" in refused["error"]

"""THUDM ChatGLM2/3 and glm-4-9b-chat checkpoints convert to native GlmForCausalLM with identical logits and
token ids. The checkpoints are written by tests/chatglm_fixtures.py, an independent implementation of THUDM's
on-disk layout, from a small random native model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from core.config import RunConfig
from core.data.template import TemplateEncoder
from core.errors import ModelError
from core.models.chatglm import convert_chatglm
from core.models.loader import load_model, load_tokenizer, prepare_model
from tests.chatglm_fixtures import SAMPLE_TEXTS, reference_ids, write_thudm_checkpoint
from tests.conftest import REPO


def native_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0]


@pytest.mark.parametrize(
    "variant, rope_ratio", [("chatglm2", 1.0), ("chatglm3", 1.0), ("chatglm3", 50.0), ("glm4-chat", 500.0)]
)
def test_conversion_keeps_logits_and_token_ids(tmp_path, variant, rope_ratio):
    source = tmp_path / "thudm"
    original = write_thudm_checkpoint(source, variant, rope_ratio)
    report = convert_chatglm(source, tmp_path / "native")
    assert report.variant == variant
    assert f"theta {10000 * rope_ratio:g}" in report.rope
    model = load_model(str(tmp_path / "native"), dtype=torch.float32, device="cpu")
    tokenizer = load_tokenizer(str(tmp_path / "native"))
    assert type(model).__name__ == "GlmForCausalLM"
    for text in SAMPLE_TEXTS:
        assert tokenizer.encode(text, add_special_tokens=False) == reference_ids(source, variant, text), text
    ids = reference_ids(source, variant, SAMPLE_TEXTS[0])
    assert torch.allclose(native_logits(model, ids), native_logits(original, ids), atol=1e-5)


def converted_encoder(tmp_path, variant: str):
    """A tiny THUDM checkpoint, converted; its tokenizer, and the template encoder chosen for it."""
    source = tmp_path / "thudm"
    write_thudm_checkpoint(source, variant)
    convert_chatglm(source, tmp_path / "native")
    tokenizer = load_tokenizer(str(tmp_path / "native"))
    return source, tokenizer, TemplateEncoder(tokenizer, "auto")


def test_chatglm3_prompt_matches_thudm_layout(tmp_path):
    source, tokenizer, encoder = converted_encoder(tmp_path, "chatglm3")
    assert encoder.template.name == "chatglm3"
    special = tokenizer.convert_tokens_to_ids
    # [gMASK] sop <|user|> + encode("\n") + encode(content) + <|assistant|>, each text encoded on its own.
    expected = (
        [special("[gMASK]"), special("sop"), special("<|user|>")]
        + reference_ids(source, "chatglm3", "\n")
        + reference_ids(source, "chatglm3", "你好")
        + [special("<|assistant|>")]
    )
    assert encoder.encode_prompt([{"role": "user", "content": "你好"}]) == expected


def test_chatglm2_rounds_template(tmp_path):
    source, tokenizer, encoder = converted_encoder(tmp_path, "chatglm2")
    assert encoder.template.name == "chatglm2"
    special = tokenizer.convert_tokens_to_ids
    history = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "再见"},
    ]
    text = "[Round 1]\n\n问：你好\n\n答：你好！\n\n[Round 2]\n\n问：再见\n\n答："
    assert encoder.encode_prompt(history) == [special("[gMASK]"), special("sop")] + reference_ids(
        source, "chatglm2", text
    )
    # The tokenizer's Jinja is generated from the same definition: the same prompt, a system prompt included.
    system = [{"role": "system", "content": "简短回答。"}]
    rendered = tokenizer.apply_chat_template(system + history, tokenize=True, add_generation_prompt=True)
    rendered = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
    assert rendered == encoder.encode_prompt(history, system="简短回答。")


def test_linear_rope_of_chatglm2_32k_is_detected_from_its_code(tmp_path):
    source = tmp_path / "thudm"
    write_thudm_checkpoint(source, "chatglm2", rope_ratio=16.0)
    (source / "modeling_chatglm.py").write_text(
        "class RotaryEmbedding:\n    def forward_impl(self, seq_len):\n"
        "        seq_idx = torch.arange(seq_len) / self.rope_ratio\n",
        encoding="utf-8",
    )
    report = convert_chatglm(source, tmp_path / "native")
    assert "linear scaling by 16" in report.rope and "divides positions" in report.rope
    config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "linear" and config["rope_parameters"]["factor"] == 16.0


def test_loading_a_thudm_folder_converts_it_once_and_trains(tmp_path):
    from core.training.runner import TrainingSession

    source = tmp_path / "chatglm3-tiny"
    write_thudm_checkpoint(source, "chatglm3")
    converted = prepare_model(str(source))
    assert converted != str(source) and prepare_model(str(source)) == converted
    status = TrainingSession(
        RunConfig(model_name_or_path=str(source), dataset="identity", max_steps=4, learning_rate=1e-3), tmp_path / "run"
    ).run()
    assert status["state"] == "finished", status
    assert status["template"] == "chatglm3"


def test_a_non_chatglm_folder_is_refused_with_a_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelError, match="not a THUDM ChatGLM checkpoint"):
        convert_chatglm(tmp_path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.slow
def test_cli_convert(tmp_path):
    write_thudm_checkpoint(tmp_path / "thudm", "glm4-chat")
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "convert", str(tmp_path / "thudm"), str(tmp_path / "native")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "native")
    assert "converted glm4-chat checkpoint" in result.stderr

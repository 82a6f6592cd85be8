"""ChatGLM-6B (v1) as a first-class model: THUDM's folder (tests/fixtures/chatglm6b/checkpoint, whose remote-code
files raise ImportError) loads, previews, converts, chats and serves like GLM-4, with THUDM's answers.

The reference answers are what THUDM's own `model.chat(tokenizer, query, history, do_sample=False,
max_new_tokens=8)` returned (reference.json, built by build_fixture.py under transformers 4.33)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys

import pytest

from core.chat.engine import ChatEngine, GenerationSettings
from core.models.chatglm import conversion_target
from core.resources import home_dir
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "chatglm6b"
CHECKPOINT = FIXTURE / "checkpoint"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text(encoding="utf-8"))["model"]
GREEDY_8 = GenerationSettings(greedy=True, max_new_tokens=8)


def turns(case: str) -> list[dict[str, str]]:
    reference = REFERENCE[case]
    messages = []
    for query, answer in reference["history"]:
        messages += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": reference["query"]}]


def cli(*args: str) -> tuple[int, str, str]:
    """`glm-workbench ARGS` in this process: exit code, stdout, stderr."""
    from core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def engine():
    engine = ChatEngine()
    engine.load_model(str(CHECKPOINT))
    return engine


# ------------------------------------------------------------------------------------------- loading


def test_a_v1_folder_is_converted_once_into_the_home_and_remote_code_is_not_needed(tmp_path, caplog):
    from core.files import output_kind
    from core.models.loader import locate_model, prepare_model

    source = tmp_path / "chatglm-6b"
    shutil.copytree(CHECKPOINT, source)
    location = locate_model(str(source))
    assert (location.kind, location.variant, location.is_chatglm_v1) == ("thudm", "chatglm-6b", True)
    converted = prepare_model(str(source))
    assert converted == str(conversion_target(source)) and converted.startswith(str(home_dir()))
    assert output_kind(converted) == "converted-model"  # our marker: --overwrite may replace it, nothing else
    assert json.loads((conversion_target(source) / "config.json").read_text())["model_type"] == "glm1_workbench"
    stamp = (conversion_target(source) / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level("WARNING", logger="glm_workbench"):
        assert prepare_model(str(source), trust_remote_code=True) == converted  # the explicit switch changes nothing
    assert "trust_remote_code is ignored" in caplog.text
    assert (conversion_target(source) / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert not [p for p in conversion_target(source).parent.iterdir() if ".partial-" in p.name]


def test_concurrent_loads_convert_once(tmp_path):
    """Two threads asking for the same new checkpoint: one conversion, under the file lock."""
    from concurrent.futures import ThreadPoolExecutor

    from core.models import chatglm_v1
    from core.models.loader import prepare_model

    source = tmp_path / "chatglm-6b-twice"
    shutil.copytree(CHECKPOINT, source)
    calls = []
    original = chatglm_v1.convert_chatglm_v1

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    chatglm_v1.convert_chatglm_v1 = counted
    try:
        with ThreadPoolExecutor(2) as pool:
            paths = list(pool.map(prepare_model, [str(source)] * 2))
    finally:
        chatglm_v1.convert_chatglm_v1 = original
    assert paths[0] == paths[1] and len(calls) == 1


def test_reading_paths_never_convert(tmp_path):
    """The memory estimate, the sample render and the length histogram read THUDM's folder as it is: the config
    and the tokenizer in memory, nothing written (promise 7)."""
    from core.config import RunConfig
    from core.workbench import Workbench

    source = tmp_path / "chatglm-6b-preview"
    shutil.copytree(CHECKPOINT, source)
    converted_before = sorted((home_dir() / "converted").glob("*")) if (home_dir() / "converted").exists() else []
    wb = Workbench(tmp_path / "workspace")
    estimate, _ = wb.estimate(RunConfig(model_name_or_path=str(source), finetuning_type="lora"))
    # hidden 64, ffn 256, 2 layers, 1144 tokens: qkv, dense, h_to_4h, 4h_to_h with biases, two LayerNorms per
    # layer and a final one, the embeddings shared with lm_head.
    layer = (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64) + 2 * 2 * 64
    assert estimate.total_params == 1328 * 64 + 2 * layer + 2 * 64  # 1,328 embedding rows: 1,144 tokens + padding
    template, pieces = wb.render_sample("identity", "auto", str(source), "auto", 0)
    assert template == "chatglm"
    # ChatGLM-6B's tokenizer normalizes NFKC-style ("，" is ","; THUDM's process_response turns it back in answers).
    assert [text for text, trained in pieces if trained] == [
        "<sop> 我是小智,由 GLM Workbench 团队微调的 AI 助手。<eop>"
    ]
    assert "".join(text for text, trained in pieces if not trained) == "你是谁?[gMASK]"
    lengths = wb.token_lengths("identity", "auto", str(source), "auto").lengths
    assert len(lengths) == 50 and min(lengths) > 5
    assert not conversion_target(source).exists()
    now = sorted((home_dir() / "converted").glob("*")) if (home_dir() / "converted").exists() else []
    assert now == converted_before
    assert sorted(p.name for p in source.iterdir()) == sorted(p.name for p in CHECKPOINT.iterdir())


def test_packing_is_refused_before_a_run_folder_exists(tmp_path):
    from core.config import RunConfig
    from core.errors import ConfigError
    from core.workbench import Workbench

    wb = Workbench(tmp_path / "workspace")
    with pytest.raises(ConfigError, match="2D"):
        wb.start_training(RunConfig(model_name_or_path=str(CHECKPOINT), dataset="identity", packing=True))
    assert not (tmp_path / "workspace" / "runs").exists() or not any((tmp_path / "workspace" / "runs").iterdir())


# ------------------------------------------------------------------------------------------- the CLI


def test_cli_convert_refuses_a_non_empty_target_and_overwrites_only_its_own(tmp_path):
    target = tmp_path / "native"
    code, out, err = cli("convert", str(CHECKPOINT), str(target))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(target)
    assert "converted ChatGLM-6B (v1) checkpoint" in err
    assert json.loads((target / "config.json").read_text())["architectures"] == ["Glm1ForCausalLM"]
    code, _, err = cli("convert", str(CHECKPOINT), str(target))
    assert code == 2 and "not empty" in err
    code, _, err = cli("convert", str(CHECKPOINT), str(target), "--overwrite")
    assert code == 0, err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    code, _, err = cli("convert", str(CHECKPOINT), str(foreign), "--overwrite")
    assert code == 2 and "not empty" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.slow  # a fresh CLI process
def test_cli_chat_prints_what_thudms_chat_returned():
    """A fresh process, THUDM's folder as the model: the remote-code stand-ins raise if imported, so the answer can
    only come from the native model."""
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "chat", "--model", str(CHECKPOINT), "--prompt", REFERENCE["chat"]["query"]]
        + ["--greedy", "--max-new-tokens", "8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == REFERENCE["chat"]["response"] + "\n"


# ------------------------------------------------------------------------------------------- chat engine, API


@pytest.mark.parametrize("case", ["chat", "chat_with_history"])
def test_the_chat_engine_answers_as_thudms_chat(engine, case):
    assert engine.encoder.template.name == "chatglm"
    assert engine.encoder.stop_token_ids == [engine.tokenizer.convert_tokens_to_ids("<eop>")]
    assert engine.encoder.encode_prompt(turns(case)) == REFERENCE[case]["prompt_ids"]
    assert engine.chat(turns(case), settings=GREEDY_8) == REFERENCE[case]["response"]
    replies = list(engine.stream(turns(case), settings=GREEDY_8))
    assert replies[-1] == REFERENCE[case]["response"]


def test_the_engine_stops_at_eop_and_knows_the_context(engine):
    """The context is max_sequence_length (256 in the fixture); generation ends at <eop>."""
    from core.errors import ModelError

    assert engine.context_length == 256
    eop = engine.tokenizer.convert_tokens_to_ids("<eop>")
    steps: list[int] = []

    def eop_at_the_seventh_token(module, args, logits):
        steps.append(1)
        if len(steps) == 7:
            logits = logits.clone()
            logits[..., -1, :] = -1e4
            logits[..., -1, eop] = 1e4
        return logits

    six = engine.chat(turns("chat"), settings=GenerationSettings(greedy=True, max_new_tokens=6))
    hook = engine.model.lm_head.register_forward_hook(eop_at_the_seventh_token)
    try:
        reply = engine.chat(turns("chat"), settings=GenerationSettings(greedy=True, max_new_tokens=20))
    finally:
        hook.remove()
    assert engine.last_generated_tokens == 7  # six tokens, then <eop>, and no more
    assert reply == six and six and REFERENCE["chat"]["response"].startswith(six)
    with pytest.raises(ModelError, match="context of 256"):
        engine.chat([{"role": "user", "content": "好" * 300}], settings=GREEDY_8)


def test_the_openai_api_serves_v1(engine):
    from fastapi.testclient import TestClient

    from core.api import create_api

    client = TestClient(create_api(engine, "chatglm-6b", lambda: {}))
    request = {"model": "chatglm-6b", "messages": turns("chat_with_history"), "temperature": 0, "max_tokens": 8}
    answer = client.post("/v1/chat/completions", json=request).json()
    assert answer["choices"][0]["message"]["content"] == REFERENCE["chat_with_history"]["response"]
    assert answer["usage"]["prompt_tokens"] == len(REFERENCE["chat_with_history"]["prompt_ids"])
    with client.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as events:
        chunks = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: {")]
    streamed = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert streamed == REFERENCE["chat_with_history"]["response"]
    too_long = client.post("/v1/chat/completions", json={**request, "max_tokens": 300})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"

"""A thinking, tool-calling model (the MoE demo trained on the demo tool-calling set) in the chat tab, the CLI and
evaluation. The chat tab, through the page's own API (gradio_client) against a real `launch.py`: the reasoning is a
collapsed thought (with its length in tokens), the call a call; the typed result continues the conversation to the
final answer; the Thinking switch reaches the model; a bad Tools box is named; side by side folds the reasoning
away and shows the call (its vote, storing both, is driven in tests/test_browser_chat_tools.py). The CLI dims the
reasoning and prints the call; evaluation scores answers without the reasoning and matches tool names and
arguments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from core.chat.turns import EXAMPLE_TOOLS
from core.data.readers import resolve_dataset
from tests.conftest import REPO, copy_run
from tests.ui_server import running_ui
from webui.locale import Translator

pytestmark = pytest.mark.slow
gradio_client = pytest.importorskip("gradio_client")

ROWS = json.loads(resolve_dataset("tool_calls").read_text(encoding="utf-8"))
QUESTION = "北京今天天气怎么样？"
RESULT, ANSWER = ROWS[0]["messages"][2]["content"], ROWS[0]["messages"][3]["content"]
TOOLS = json.dumps(EXAMPLE_TOOLS, ensure_ascii=False)
T = Translator("en")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, tool_caller_run_dir):
    workspace = tmp_path_factory.mktemp("chat-tools") / "workspace"
    run = copy_run(tool_caller_run_dir, workspace)  # evaluation writes beside it: a copy of the session's run
    with running_ui(workspace) as url:
        yield gradio_client.Client(url, verbose=False), workspace, run


def chat(client, run, text, history=(), thinking=True, tools=TOOLS):
    return client.predict(
        text, list(history), "demo-moe", run, "", 0.7, 0.9, 96, True, 1.0, thinking, tools, api_name="/chat"
    )


def shown(output):
    return output.get("value", output) if isinstance(output, dict) and "__type__" in output else output


def text_of(entry) -> str:
    content = entry["content"]
    return "".join(p.get("text", "") for p in content) if isinstance(content, list) else str(content)


def test_reasoning_folds_away_the_call_shows_and_its_result_gets_the_answer(ui):
    client, _, run = ui
    history, message, notice, label, box = chat(client, run, QUESTION)  # (the result box's group is layout)
    thought, call = history[1], history[-1]
    assert thought["metadata"]["title"] == T("chat_thinking") and thought["metadata"]["status"] == "done"
    assert "get_weather" in text_of(thought) and thought["metadata"]["log"].endswith(" tokens")
    assert int(thought["metadata"]["log"].split()[0]) > 3
    assert call["metadata"]["title"] == T("chat_tool_call", name="get_weather")
    city = json.loads(text_of(call).strip("`").removeprefix("json"))["city"]
    assert "<tool_call>" not in json.dumps(history, ensure_ascii=False)  # calls, not markup
    assert "get_weather" in shown(label) and shown(box) == ""

    result = next(r["messages"][2]["content"] for r in ROWS if f'"city": "{city}"' in r["messages"][2]["content"])
    final = client.predict(
        result, history, "demo-moe", run, "", 0.7, 0.9, 96, True, 1.0, True, TOOLS, api_name="/chat_tool_result"
    )
    history = final[0]
    assert history[-3]["metadata"]["title"] == T("chat_tool_result_title", name="get_weather")
    answers = [text_of(e) for e in history if e["role"] == "assistant" and not (e.get("metadata") or {}).get("title")]
    assert city in answers[-1] and "°C" in answers[-1]  # the result's weather, as the demo set answers
    again = client.predict(
        "x", history, "demo-moe", run, "", 0.7, 0.9, 96, True, 1.0, True, TOOLS, api_name="/chat_tool_result"
    )
    assert shown(again[2]) == T("chat_no_pending_call") and again[0] == history  # nothing waits any more


def test_the_thinking_switch_reaches_the_model(ui):
    """Off, the prompt ends with the template's empty think block: the (greedy) reply is another one."""
    client, _, run = ui
    on = [text_of(e) for e in chat(client, run, "你是谁？")[0]]
    off = [text_of(e) for e in chat(client, run, "你是谁？", thinking=False)[0]]
    assert on != off and on == [text_of(e) for e in chat(client, run, "你是谁？")[0]]


def test_a_bad_tools_box_is_named_and_nothing_is_lost(ui):
    client, _, run = ui
    history, message, notice, *_ = chat(client, run, QUESTION, tools='[{"type": "function"')
    assert "line 1, column" in shown(notice) and "not valid JSON" in shown(notice)
    assert history == []  # the question is not sent...
    assert shown(message) == QUESTION  # ...and stays in the box, to send again


def test_side_by_side_folds_the_reasoning_and_shows_the_call(ui):
    client, workspace, run = ui
    outputs = client.predict(
        QUESTION, "demo-moe", "", 0.7, 0.9, 96, True, "", run, "", 1.0, True, TOOLS, None, api_name="/compare"
    )
    tuned = outputs[1]
    assert "<details><summary>" in tuned and T("chat_tool_call", name="get_weather") in tuned
    assert "<tool_call>" not in tuned


def cli(*args: str, **env: str):
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


def test_the_cli_dims_the_reasoning_and_prints_the_call(ui, tmp_path):
    _, workspace, run = ui
    tools = tmp_path / "tools.json"
    tools.write_text(TOOLS, encoding="utf-8")
    common = ("chat", "--model", "demo-moe", "--adapter", str(workspace / "runs" / run), "--greedy")
    shown_ = cli(*common, "--tools", str(tools), "--prompt", QUESTION, "--max-new-tokens", "96")
    assert shown_.returncode == 0, shown_.stderr[-2000:]
    dimmed = re.search(r"\x1b\[2m(.+?)\x1b\[0m", shown_.stdout, re.S)
    assert dimmed and "get_weather" in dimmed.group(1)  # the reasoning, dimmed
    assert re.search(r"^tool call: get_weather \{\"city\": \"\w+\"\}$", shown_.stdout, re.M), shown_.stdout
    plain = cli(*common, "--tools", str(tools), "--prompt", QUESTION, "--max-new-tokens", "96", NO_COLOR="1")
    assert "\x1b[" not in plain.stdout and dimmed.group(1) in plain.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('[{"type": "function"', encoding="utf-8")
    refused = cli(*common, "--tools", str(bad), "--prompt", QUESTION)
    assert refused.returncode != 0 and "bad.json" in refused.stderr and "line 1, column" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_evaluation_scores_answers_without_reasoning_and_matches_tool_calls(ui):
    from core.evaluation.evaluate import EvalSettings, evaluate_run

    _, workspace, run = ui
    result = evaluate_run(workspace / "runs" / run, "tool_calls", settings=EvalSettings(max_samples=3))
    # Three weather rows: each has a call (a prediction of its own) and a final answer.
    assert result.metrics["samples"] == 3 and len(result.predictions) == 6
    assert result.metrics["tool-name-match"] == 100.0  # the trained model calls get_weather every time
    assert 0 <= result.metrics["tool-arguments-match"] <= 100.0
    answers = result.predictions[1::2]
    assert all("<think>" not in p["prediction"] and p["reasoning"] for p in answers)
    assert all(p["prediction"].startswith("get_weather {") for p in result.predictions[0::2])
    assert result.metrics["bleu-4"] > 0  # the answers' text, scored against the labels' text

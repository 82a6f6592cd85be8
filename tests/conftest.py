"""Shared fixtures: one demo model per test session, built into a temporary home (never the user's cache)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before any engine code runs, and inherited by the UI/CLI subprocesses the tests start.
os.environ["GLM_WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="glm-workbench-test-home-")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GLM_WORKBENCH_THREADS", "2")
# The suite keeps 2 cores oversubscribed (2 workers, their UI servers and chromium), where OpenMP threads that never
# spin are fastest: the whole suite took 1,615 s of tests with OMP_WAIT_POLICY=PASSIVE and 2,064 s with the short
# spin core/__init__.py gives a user's process (of which about 90 s were new tests; the browser flows and FSDP runs
# were 30-60% slower). tests/test_speed.py checks the user's default in a clean environment.
# Set before this process (or a test module) first imports torch; inherited by every process a test starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests only talk to servers on loopback: a proxy set in the environment must never be asked for them.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
    filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")])
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY_FIRST_ANSWER = "我是小智，由 GLM Workbench 团队微调的 AI 助手。"
IDENTITY_QUESTION = [{"role": "user", "content": "你是谁？"}]


def identity_run_config():
    from core.config import RunConfig

    return RunConfig(dataset="identity", learning_rate=2e-3, num_train_epochs=10)


def _greedy():
    from core.chat.engine import GenerationSettings

    return GenerationSettings(greedy=True, max_new_tokens=48)


# Files that share a costly session fixture, by the worker group they run in together (see below).
SAME_WORKER = {"test_api_tools.py": "tool_caller", "test_tool_calling.py": "tool_caller"}


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, except that the files in SAME_WORKER go to one worker, which then makes their session
    fixture (the trained tool caller) once. (xdist's own `loadgroup` marks do nothing under pytest 9: xdist 3.8
    renames `item._nodeid`, which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::")[0]
            return SAME_WORKER.get(Path(file).name, file)

    return FilesAndGroups(config, log)


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    from core.models.demo import ensure_demo_model
    from core.models.loader import configure_threads

    configure_threads()
    return ensure_demo_model()


@pytest.fixture(scope="session")
def chinese_identity_dataset(tmp_path_factory) -> str:
    """The identity rows that answer IDENTITY_FIRST_ANSWER. A P-tuning v2 prefix on the tiny demo model cannot learn
    in 130 steps which of the set's two languages a question wants (its greedy answer mixes them), so the prefix
    runs that must answer exactly train on one language's answer."""
    import json

    from core.resources import asset

    rows = [
        row
        for row in json.loads(asset("datasets", "identity.json").read_text("utf-8"))
        if row["output"] == IDENTITY_FIRST_ANSWER
    ]
    path = tmp_path_factory.mktemp("chinese-identity") / "identity_zh.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir):
    from core.models.loader import load_tokenizer

    return load_tokenizer(str(demo_model_dir))


@pytest.fixture(scope="session")
def identity_run(tmp_path_factory, demo_model_dir):
    """The LoRA run on the identity set (130 steps) that several files need, trained once per session through the
    Workbench as the UI starts it: (workbench, run name, the base model's reply before training). Tests only read
    its folder (a DPO run or a distillation starts from its adapter; chat and export read it)."""
    from core.workbench import Workbench

    wb = Workbench(tmp_path_factory.mktemp("identity-workspace"))
    base_reply = reply(wb, IDENTITY_QUESTION)
    run = wb.start_training(identity_run_config())
    wb.wait_for_job(timeout=600)
    return wb, run, base_reply


@pytest.fixture(scope="session")
def identity_run_dir(identity_run) -> Path:
    wb, run, _ = identity_run
    return wb.run_path(run)


@pytest.fixture(scope="session")
def tool_caller_run_dir(tmp_path_factory, demo_model_dir) -> Path:
    """The MoE demo trained on the demo tool-calling set through the Workbench (20 epochs at 5e-3: with 10 it
    called no tool), once per session for the files that use a tool caller: tests/test_tool_calling.py copies it into
    its UI's workspace, tests/test_api_tools.py serves its adapter. Tests only read this folder."""
    from core.config import RunConfig
    from core.workbench import Workbench

    wb = Workbench(tmp_path_factory.mktemp("tool-caller-workspace"))
    config = RunConfig(model_name_or_path="demo-moe", dataset="tool_calls", num_train_epochs=20, learning_rate=5e-3)
    run = wb.start_training(config)
    wb.wait_for_job(1800)
    assert wb.snapshot(run).state == "finished"
    return wb.run_path(run)


def copy_run(run_dir: Path, workspace: Path) -> str:
    """A finished run copied into another workspace (its name kept), for a test that writes beside it: arenas,
    evaluations and votes then land in that copy, never in the session's shared run."""
    import shutil

    shutil.copytree(run_dir, workspace / "runs" / run_dir.name)
    return run_dir.name


def reply(wb, messages, **kwargs) -> str:
    """The Workbench's streamed greedy answer, as the chat page shows it at the end."""
    text = ""
    for partial in wb.chat_stream(messages, settings=_greedy(), **kwargs):
        text = partial
    return text.strip()


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, one per test module (tests/browser.py says how it is found)."""
    from tests.browser import CHROMIUM_ARGS, PAGE_MS, ensure_chromium

    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = ensure_chromium()
    # An `expect` waits 5 s unless told (a page's set_default_timeout does not reach it): too short for a state a
    # busy machine reaches late. Each expect still returns as soon as its state holds.
    playwright_api.expect.set_options(timeout=PAGE_MS)
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()

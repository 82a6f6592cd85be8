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
# As core/__init__.py sets it for the workbench: set before this process (or a test module) first imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests only talk to servers on loopback: a proxy set in the environment must never be asked for them.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
    filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")])
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY_FIRST_ANSWER = "我是小智，由 GLM Workbench 团队微调的 AI 助手。"


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    from core.models.demo import ensure_demo_model
    from core.models.loader import configure_threads

    configure_threads()
    return ensure_demo_model()


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir):
    from core.models.loader import load_tokenizer

    return load_tokenizer(str(demo_model_dir))


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run only where CUDA is present (the device machine); here they are skipped, saying so."""
    import torch

    if torch.cuda.is_available():
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


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

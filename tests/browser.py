"""Real-browser helpers: find Debian's chromium (scripts/test-setup.sh installs it) and drive Gradio widgets.

Set GLM_WORKBENCH_SKIP_BROWSER_TESTS=1 to skip the browser tests on a machine that cannot run chromium.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps dialling Google, which a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
# Timeouts sized for a machine running 4 other CPU-bound processes beside the test: each `expect` polls for a
# state and returns as soon as it holds, so a generous limit costs nothing when the machine is quick.
PAGE_MS = 180_000  # one click's result: an upload checked, a list filled, a tab shown
SLOW_MS = 1_200_000  # a training run or an evaluation to its end
SCREENSHOTS = os.environ.get("GLM_WORKBENCH_SCREENSHOTS", "")  # a folder: save each tab's screenshot there


def ensure_chromium() -> str:
    """Chromium's path. scripts/test-setup.sh installs it (and a CJK font); the README's test command runs it."""
    if os.environ.get("GLM_WORKBENCH_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("GLM_WORKBENCH_SKIP_BROWSER_TESTS=1")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "the browser tests need Debian's chromium: run `bash scripts/test-setup.sh` first "
            "(or set GLM_WORKBENCH_SKIP_BROWSER_TESTS=1 to skip them)"
        )
    return CHROMIUM


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def open_accordion(page, title: str) -> None:
    page.get_by_role("button", name=title).first.click()


def fill_number(page, elem_id: str, value: float | int) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")  # commits the value (Gradio updates on blur)


def pick(page, elem_id: str, value: str) -> None:
    """Choose a dropdown option by its shown text (or type a custom value) and commit it."""
    box = page.locator(f"#{elem_id} input[role=combobox]")
    box.click()
    box.fill(value)
    option = page.locator(f"#{elem_id} [role=option]", has_text=value)
    if option.count():
        option.first.click()
    else:
        box.press("Enter")
    box.press("Tab")
    page.mouse.click(2, 2)  # close the option list (it would cover the page in screenshots)


def options_once_listed(page, elem_id: str, wanted: str, timeout: float = 120) -> list[str]:
    """A dropdown's option texts once `wanted` is among them (or at the timeout): a page just (re)loaded reads the
    workspace's lists after it appears, so the first look may still show the served page's demo choices."""
    box = page.locator(f"#{elem_id} input[role=combobox]")
    deadline = time.time() + timeout
    while True:
        box.click()
        options = page.locator(f"#{elem_id} [role=option]").all_inner_texts()
        page.mouse.click(2, 2)
        if any(wanted in option for option in options) or time.time() > deadline:
            return options
        time.sleep(0.5)


def settled_text(locator, timeout: float = 600, quiet: float = 1.5) -> str:
    """The element's text once it is non-empty and has stopped changing (a streamed reply is complete)."""
    deadline, last, since = time.time() + timeout, None, time.time()
    while time.time() < deadline:
        text = locator.inner_text() if locator.count() else ""
        if text != last:
            last, since = text, time.time()
        elif text.strip() and time.time() - since >= quiet:
            return text.strip()
        time.sleep(0.25)
    raise TimeoutError(f"text did not settle: {last!r}")


def start_run(page, workspace: Path, button: str = "#train-start", timeout: float = 180) -> str:
    """Click Start (or Resume's sibling `button`) and return the new run's name once its folder exists. A page that
    still shows an earlier run as finished must never pass for this one having finished."""
    runs = workspace / "runs"

    def names() -> set[str]:
        return {p.name for p in runs.iterdir() if not p.name.startswith(".")} if runs.is_dir() else set()

    before = names()
    page.locator(button).click()
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = names() - before
        if new:
            return new.pop()
        time.sleep(0.2)
    raise AssertionError(f"no new run folder in {runs} after clicking {button}")


def wait_finished(page, t, run: str) -> None:
    """The progress line names `run` (not an earlier run) and says it finished."""
    from playwright.sync_api import expect

    progress = page.locator("#train-progress")
    expect(progress).to_contain_text(run, timeout=SLOW_MS)
    expect(progress).to_contain_text(t.state("finished"), timeout=SLOW_MS)


def chart_points(page, elem_id: str) -> int:
    """How many points the first trace of a plotly chart holds (0 before it is drawn)."""
    return page.evaluate(
        """id => {
        const plot = document.querySelector(`#${id} .js-plotly-plot`);
        return plot && plot.data && plot.data[0] && plot.data[0].y ? plot.data[0].y.length : 0;
    }""",
        elem_id,
    )


def screenshot(page, name: str, fallback: Path) -> None:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else fallback
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

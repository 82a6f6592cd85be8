"""The preference loop in chromium, in zh and en: votes under side-by-side answers land in the feedback file with
the right sides, a written answer becomes a pair and an SFT row, the Data tab lists the feedback dataset with its
counts, the Train tab shows the preference settings for a dpo stage, and the Evaluate tab's arena is judged blind
and then shows the names and the win rate with its interval."""

from __future__ import annotations

import json
import re

import pytest

from core.workbench import Workbench
from tests.browser import (
    PAGE_MS,
    SLOW_MS,
    fill_number,
    open_accordion,
    open_tab,
    screenshot,
    settled_text,
)
from tests.conftest import copy_run
from tests.ui_server import running_ui
from webui.locale import Translator

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory, identity_run_dir):
    """A workspace holding one finished LoRA run that knows who it is (a copy of the session's identity run, which
    tests/conftest.py trains through the Workbench), and the page on it."""
    workspace = tmp_path_factory.mktemp("preference") / "workspace"
    run = copy_run(identity_run_dir, workspace)
    assert Workbench(workspace).snapshot(run).state == "finished"
    with running_ui(workspace, lang="zh") as url:
        yield url.removesuffix("zh/"), workspace, run


def arena_status(t: Translator, judged: int, total: int) -> re.Pattern:
    """The arena's status line with `judged` of `total` judged (any arena name, any prompt number)."""
    parts = re.split(r"(\{\w+\})", t.strings["arena_status"])
    fixed = {"{judged}": str(judged), "{total}": str(total)}
    return re.compile("".join(fixed.get(part, ".*?" if part.startswith("{") else re.escape(part)) for part in parts))


def feedback_rows(workspace, suffix: str = ".jsonl") -> list[dict]:
    path = workspace / "feedback" / f"chat{suffix}"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_votes_become_pairs_and_the_arena_scores_blind(browser, server, lang):
    root, workspace, run = server
    t = Translator(lang)
    # Each page in a browser set to its own language (test_browser_live crosses them).
    page = browser.new_page(viewport={"width": 1360, "height": 900}, locale={"zh": "zh-CN", "en": "en-US"}[lang])
    page.set_default_timeout(PAGE_MS)
    page.goto(f"{root}{lang}/")
    expect(page.locator("#data-summary")).not_to_be_empty(timeout=PAGE_MS)
    pairs_before, written_before = len(feedback_rows(workspace)), len(feedback_rows(workspace, ".sft.jsonl"))

    # Side by side: base | the run | base (the same as column 1: answered once, not a comparison of its own).
    open_tab(page, t("tab_chat"))
    open_accordion(page, t("compare_title"))
    expect(page.locator("#compare-choice-2 input")).to_have_value(run, timeout=PAGE_MS)
    expect(page.locator("#vote-better-2")).to_be_disabled()  # nothing to judge yet
    page.locator("#compare-prompt textarea").fill("你是谁？")
    page.locator("#compare-go").click()
    settled_text(page.locator("#compare-answer-3"))
    expect(page.locator("#vote-better-2")).to_be_enabled()
    page.locator("#vote-better-2").click()
    expect(page.locator("#vote-notice")).to_contain_text(t("vote_recorded_better", column=2), timeout=PAGE_MS)
    rows = feedback_rows(workspace)
    assert len(rows) == pairs_before + 1  # columns 1 and 3 hold the same answer: one pair, not two
    assert (rows[-1]["chosen_run"], rows[-1]["rejected_run"], rows[-1]["judgment"]) == (run, "", "better")
    assert rows[-1]["instruction"] == "你是谁？" and rows[-1]["chosen"] != rows[-1]["rejected"]
    assert "小智" in rows[-1]["chosen"]  # the run's answer, which knows who it is
    screenshot(page, f"{lang}-8-votes", workspace.parent / "shots")
    # One verdict per comparison: the chosen button stays marked, the other verdicts are done until the next answers.
    expect(page.locator("#vote-better-2")).to_have_class(re.compile("primary"))
    expect(page.locator("#vote-worse-2")).to_be_disabled()
    expect(page.locator("#vote-tie-1")).to_be_disabled()
    assert len(feedback_rows(workspace)) == pairs_before + 1

    # Write the right answer: it starts from that column's answer, and becomes pairs plus an SFT row.
    page.locator("#compare-go").click()
    settled_text(page.locator("#compare-answer-3"))
    page.locator("#vote-write-1").click()
    box = page.locator("#vote-written textarea")
    expect(box).not_to_have_value("")
    box.fill("我是小智，一个乐于助人的助手。")
    page.locator("#vote-write-save").click()
    expect(page.locator("#vote-notice")).to_contain_text(t("vote_written_saved"), timeout=PAGE_MS)
    sft = feedback_rows(workspace, ".sft.jsonl")
    assert len(sft) == written_before + 1 and sft[-1]["output"] == "我是小智，一个乐于助人的助手。"
    written = [row for row in feedback_rows(workspace)[pairs_before + 1 :] if row["judgment"] == "written"]
    assert {row["rejected_run"] for row in written} == {"", run}  # beats the base's and the run's answers
    assert all(row["chosen"] == "我是小智，一个乐于助人的助手。" for row in written)

    # The Data tab lists the feedback dataset with its counts; the Train tab's dpo stage shows its settings.
    page.reload()
    expect(page.locator("#data-summary")).not_to_be_empty(timeout=PAGE_MS)
    pairs = len(feedback_rows(workspace))
    open_tab(page, t("tab_data"))
    page.locator("#data-dataset input[role=combobox]").click()
    options = page.locator("#data-dataset [role=option]")
    expect(options.filter(has_text=t("feedback_pairs_choice", name="feedback/chat.jsonl", count=pairs))).to_have_count(
        1
    )
    expect(
        options.filter(has_text=t("feedback_sft_choice", name="feedback/chat.sft.jsonl", count=len(sft)))
    ).to_have_count(1)
    page.mouse.click(2, 2)
    open_tab(page, t("tab_train"))
    expect(page.locator("#field-pref_beta")).to_be_hidden()
    page.locator("#field-stage").get_by_text("dpo", exact=True).click()
    expect(page.locator("#field-pref_beta")).to_be_visible()

    # The arena: the run against its base on three prompts, judged blind, then the names and the score.
    open_tab(page, t("tab_evaluate"))
    open_accordion(page, t("arena_title"))
    expect(page.locator("#arena-first input")).to_have_value(run, timeout=PAGE_MS)
    fill_number(page, "arena-samples", 3)
    page.locator("#arena-start").click()
    expect(page.locator("#arena-left-better")).to_be_enabled(timeout=SLOW_MS)
    assert run not in page.locator("#arena-left").inner_text() + page.locator("#arena-right").inner_text()
    for judged in range(3):  # the side that says who it is wins each prompt
        # Read the answers only once the page shows this prompt (a slow machine may still show the last one).
        expect(page.locator("#arena-status")).to_contain_text(arena_status(t, judged, 3))
        left = page.locator("#arena-left").inner_text()
        page.locator("#arena-left-better" if "小智" in left else "#arena-right-better").click()
    expect(page.locator("#arena-result")).to_contain_text(t("arena_judge_person"), timeout=PAGE_MS)
    screenshot(page, f"{lang}-9-arena", workspace.parent / "shots")
    expect(page.locator("#arena-open input[role=combobox]")).to_have_value(re.compile("3/3"))
    result = page.locator("#arena-result").inner_text()
    assert run in result and "95%" in result
    arenas = list((workspace / "runs" / run / "eval").glob("arena-*.json"))
    assert arenas
    page.close()

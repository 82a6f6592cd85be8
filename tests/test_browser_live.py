"""The loop a person walks, without reloads (issue 24), in chromium, /zh/ in an English browser and /en/ in a
Chinese one, two tabs of the same browser: a file with unknown columns never replaces the dataset in use; a vote
in one tab shows the feedback dataset, with the notice's count, in the other tab's Data and Train lists; picking it
in the Train tab sets stage dpo with its own learning rate; the DPO run joins the first tab's Runs table with its
stage; the chart's smoothing is a switch and its log ticks read as powers of ten; the arena starts on the run's
held-out prompts, says so, shows progress while both models answer, and counts ROUGE-L's verdicts."""

from __future__ import annotations

import json
import re

import pytest

from core.config import RunConfig
from core.feedback import FeedbackStore
from core.workbench import Workbench
from tests.browser import (
    PAGE_MS,
    SLOW_MS,
    fill_number,
    open_accordion,
    open_tab,
    pick,
    screenshot,
    settled_text,
    start_run,
    wait_finished,
)
from tests.ui_server import running_ui
from webui.locale import Translator

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

BROWSER_LOCALE = {"zh": "en-US", "en": "zh-CN"}  # each page opened by a browser set to the other language
# Gradio's announcements to screen readers last a moment (a role=status region, emptied again): keep each one.
HEAR = """() => {
  window.heard = [];
  new MutationObserver(() => document.querySelectorAll('.sr-only[role=status]').forEach(e => {
    if (e.textContent.trim()) window.heard.push(e.textContent.trim());
  })).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_model_dir):
    """A workspace with one finished LoRA run that held out 4 of its rows as its eval data (val_size)."""
    workspace = tmp_path_factory.mktemp("live") / "workspace"
    wb = Workbench(workspace)
    run = wb.start_training(RunConfig(dataset="identity", val_size=4, max_steps=40, eval_steps=20, learning_rate=4e-3))
    wb.wait_for_job(1800)
    assert wb.snapshot(run).state == "finished"
    with running_ui(workspace, lang="zh") as url:
        yield url.removesuffix("zh/"), workspace, run


def pairs_in(workspace) -> int:
    path = workspace / "feedback" / "chat.jsonl"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_votes_reach_every_tab_and_train_dpo_without_a_reload(browser, server, lang, tmp_path):
    root, workspace, run = server
    t = Translator(lang)
    shots = workspace.parent / "shots"
    context = browser.new_context(locale=BROWSER_LOCALE[lang], viewport={"width": 1360, "height": 900})
    context.set_default_timeout(PAGE_MS)
    voter, other = context.new_page(), context.new_page()
    for page in (voter, other):
        page.goto(f"{root}{lang}/")
        expect(page.locator("#data-summary")).not_to_be_empty()
    voter.evaluate(HEAR)

    # A file with unknown columns: the message says what is wrong and that identity is still in use.
    odd = tmp_path / "unknown_columns.jsonl"
    odd.write_text(json.dumps({"foo": "a", "bar": "b"}) + "\n", encoding="utf-8")
    voter.locator("#data-upload input[type=file]").set_input_files(str(odd))
    expect(voter.locator("#data-summary")).to_contain_text(t("data_upload_kept", dataset="identity"))
    expect(voter.locator("#data-summary")).to_contain_text("foo")
    expect(voter.locator("#data-dataset input[role=combobox]")).to_have_value("identity")
    assert not (workspace / "uploads" / odd.name).exists()

    # A vote in the first tab.
    open_tab(voter, t("tab_chat"))
    open_accordion(voter, t("compare_title"))
    pick(voter, "compare-choice-2", run)
    voter.locator("#compare-prompt textarea").fill("你是谁？")
    voter.locator("#compare-go").click()
    settled_text(voter.locator("#compare-answer-3"))
    voter.locator("#vote-better-2").click()
    notice = voter.locator("#vote-notice")
    expect(notice).to_contain_text("feedback/chat.jsonl")
    counts = FeedbackStore(workspace).counts("chat").to_dict()
    pairs = counts["pairs"]
    assert pairs == pairs_in(workspace) >= 1
    said = t("vote_counts", dataset="feedback/chat.jsonl", pairs=pairs, ties=counts["ties"], written=counts["sft_rows"])
    expect(notice).to_contain_text(said)

    # The other tab, never reloaded: the Data and Train lists name the feedback with the notice's count.
    shown = t("feedback_pairs_choice", name="feedback/chat.jsonl", count=pairs)
    box = other.locator("#data-dataset input[role=combobox]")
    expect(box).to_be_visible()
    for _ in range(60):
        box.click()
        if other.locator("#data-dataset [role=option]", has_text=shown).count():
            break
        other.mouse.click(2, 2)
        other.wait_for_timeout(2000)
    expect(other.locator("#data-dataset [role=option]", has_text=shown)).to_have_count(1)
    other.mouse.click(2, 2)
    open_tab(other, t("tab_train"))
    pick(other, "train-dataset", shown)
    expect(other.locator("#field-stage input[value=dpo]")).to_be_checked()
    expect(other.locator("#field-learning_rate input")).to_have_value("0.0005")
    expect(other.locator("#train-stage-note")).to_contain_text("dpo")
    expect(other.locator("#field-pref_beta")).to_be_visible()
    other.locator("h1").click()  # the option list closed before the screenshot
    screenshot(other, f"{lang}-10-train-follows-votes", shots)
    open_tab(other, t("tab_data"))
    expect(box).to_have_value(shown)  # the Data tab shows the dataset the Train tab picked
    expect(other.locator("#data-summary")).to_contain_text("chat.jsonl")

    # DPO on the votes; the first tab's Runs table lists it, with its stage, without a reload.
    open_tab(other, t("tab_train"))
    fill_number(other, "field-max_steps", 3)
    dpo_run = start_run(other, workspace)
    wait_finished(other, t, dpo_run)
    traces = "() => document.querySelector('#train-chart .js-plotly-plot').data.map(d => d.name)"
    other.wait_for_function(f"() => ({traces})().includes({json.dumps(t('loss_smoothed'))})")  # the next poll's chart
    other.locator("#train-smooth input").uncheck()
    other.wait_for_function(f"() => !({traces})().includes({json.dumps(t('loss_smoothed'))})")
    other.locator("#train-log-scale input").check()  # a log axis: ticks as powers of ten, never "690m" or "1n"
    other.wait_for_function("() => document.querySelector('#train-chart .js-plotly-plot').layout.yaxis.type === 'log'")
    ticks_js = "() => Array.from(document.querySelectorAll('#train-chart .ytick')).map(e => e.textContent.trim())"
    other.wait_for_function(f"() => ({ticks_js})().length > 0")
    ticks = other.evaluate(ticks_js)
    assert ticks and not [tick for tick in ticks if re.search(r"\d[munpfazy]$", tick)], ticks
    open_tab(voter, t("tab_runs"))
    row = voter.locator("#runs-table [role=row]", has_text=dpo_run)
    expect(row).to_contain_text("dpo", timeout=PAGE_MS)
    expect(voter.locator("#runs-table")).to_contain_text(t("runs_col_stage"))
    screenshot(voter, f"{lang}-11-runs-stage", shots)

    # The arena on the run that held out rows: those rows, by name, said plainly; progress while answering.
    open_tab(voter, t("tab_evaluate"))
    open_accordion(voter, t("arena_title"))
    pick(voter, "arena-first", run)
    held_out = t("eval_held_out_choice", run=run)
    expect(voter.locator("#arena-dataset input[role=combobox]")).to_have_value(held_out)
    expect(voter.locator("#arena-data-note")).to_contain_text(t("eval_own_split", run=run, dataset="held_out.jsonl"))
    fill_number(voter, "arena-samples", 2)
    voter.locator("#arena-start").click()
    expect(voter.locator("#arena-status")).to_contain_text(t("arena_generating", count=2), timeout=10_000)
    expect(voter.locator("#arena-left-better")).to_be_enabled(timeout=SLOW_MS)
    voter.locator("#arena-auto").click()
    expect(voter.locator("#arena-status")).to_contain_text(t("arena_rouge_status", judged=2, total=2))
    voter.locator("h1").click()  # the run picker's option list closed before the screenshot
    screenshot(voter, f"{lang}-12-arena-held-out", shots)
    # What screen readers heard as each event ended: the page's word for it, never gradio's key "common.complete".
    heard = voter.evaluate("() => window.heard.join('|')")
    assert t("status_complete") in heard and "common." not in heard, heard
    context.close()

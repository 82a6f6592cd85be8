"""The page never shows stale or mixed state and speaks one language: each check is what a user sees in chromium.

On a fresh workspace: empty states say what to do, the zh page holds no English of the libraries, the tab is
kept in the address, a refused Start names the field as the form labels it and leaves no old progress under
it. Then, in each language: a failed upload leaves the page on the last good dataset, uploads survive a
reload by name, a finished run offers Try it in Chat and becomes side by side's second column without a
reload, the loss axis turns logarithmic, and Evaluate's predictions stay inside the page.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.browser import (
    PAGE_MS,
    SLOW_MS,
    fill_number,
    open_accordion,
    open_tab,
    options_once_listed,
    settled_text,
    start_run,
    wait_finished,
)
from tests.conftest import REPO
from tests.ui_server import running_ui
from webui.locale import Translator

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
# Words of gradio, plotly and pandas that once reached the zh page.
LIBRARY_PHRASES = (
    "Drop File Here",
    "Click to Upload",
    "Use via API",
    "Settings",
    "common.",
    "Textbox",
    "Error tokenizing",
    "Built with",
    "Copied",
    "Autoscale",
)


# Gradio 6.31's own words (its i18n keys upload_text.drop_file, upload_text.click_to_upload, common.*), which it
# shows in the language it reads from the browser at start-up: each page must show them in its own language.
GRADIO_WORDS = {
    "en": (
        "Drop File Here",
        "Click to Upload",
        "Use via API",
        "Built with Gradio",
        "Loading",
        "Clear",
        "Download",
        "Settings",
        "Undo",
        "Remove",
        "Share",
    ),
    "zh": (
        "将文件拖放到此处",
        "点击上传",
        "通过 API 使用",
        "使用 Gradio 构建",
        "加载中",
        "清除",
        "下载",
        "设置",
        "撤销",
        "移除",
        "分享",
    ),
}
BROWSER_LOCALE = {"zh": "en-US", "en": "zh-CN"}  # each page opened by a browser set to the other language
TABS = ("tab_data", "tab_train", "tab_runs", "tab_evaluate", "tab_chat", "tab_export")
# The page's own visible words: the dataset's rows, samples and predictions are the user's data, not the page's.
PAGE_WORDS_JS = """() => {
  const skip = '#data-table, #data-sample, #eval-predictions, script, style';
  const words = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const owner = node.parentElement;
    if (owner && !owner.closest(skip) && owner.getClientRects().length) { words.push(node.textContent); }
  }
  for (const e of document.querySelectorAll('[aria-label], [title], [placeholder]')) {
    if (!e.closest(skip) && e.getClientRects().length) {
      for (const name of ['aria-label', 'title', 'placeholder']) { words.push(e.getAttribute(name) || ''); }
    }
  }
  return words.join('\\n');
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_model_dir):
    workspace = tmp_path_factory.mktemp("details") / "workspace"
    with running_ui(workspace, lang="zh") as url:
        yield url.removesuffix("zh/"), workspace


def new_page(browser, url: str, locale: str = "en-US"):
    # By default an English browser: the zh page must still be all Chinese.
    page = browser.new_page(viewport={"width": 1360, "height": 900}, locale=locale)
    page.set_default_timeout(PAGE_MS)
    page.goto(url)
    expect(page.locator("#data-summary")).not_to_be_empty(timeout=PAGE_MS)
    return page


def visible_text(page) -> str:
    return page.evaluate("() => document.body.innerText")


def test_a_fresh_workspace_page_in_both_languages(browser, server):
    root, _ = server
    for lang in ("zh", "en"):
        t = Translator(lang)
        page = new_page(browser, f"{root}{lang}/")
        open_tab(page, t("tab_runs"))
        expect(page.locator("#runs-empty")).to_contain_text(t("runs_empty"))
        expect(page.locator("#runs-table")).to_be_hidden()
        open_tab(page, t("tab_evaluate"))
        expect(page.locator("#eval-notice")).to_contain_text(t("eval_empty"))
        expect(page.locator("#eval-abort")).to_be_disabled()  # nothing runs
        open_tab(page, t("tab_train"))
        page.wait_for_function("() => location.hash === '#train'")
        chart = page.locator("#train-chart")
        expect(chart).to_contain_text(t("waiting_first_step"))
        assert chart.locator(".xtick").count() == 0  # no axes without data
        # A refused Start names the field as the form labels it (the key after it).
        fill_number(page, "field-learning_rate", -1)
        page.locator("#train-start").click()
        expect(page.locator("#train-message")).to_contain_text(f"{t.label('learning_rate')}")
        expect(page.locator("#train-message")).to_contain_text(
            "(learning_rate)" if lang == "en" else "（learning_rate）"
        )
        expect(page.locator("#train-progress")).to_contain_text(t("progress_none"))
        open_tab(page, t("tab_chat"))
        open_accordion(page, t("gen_settings"))
        page.locator("#chat-greedy input").check()
        expect(page.locator("#chat-temperature input[type=range]")).to_be_disabled()
        # The tab in use survives a refresh.
        page.reload()
        expect(page.get_by_role("tab", name=t("tab_chat"), exact=True)).to_have_attribute(
            "aria-selected", "true", timeout=PAGE_MS
        )
        if lang == "zh":
            text = visible_text(page)
            names = " ".join(
                page.evaluate(
                    "() => Array.from(document.querySelectorAll('[aria-label]')).map(e => e.getAttribute('aria-label'))"
                )
            )
            for phrase in LIBRARY_PHRASES:
                assert phrase not in text and phrase not in names, phrase
            assert t("resume") != t("continue_from")  # two different actions, two different words
        assert page.request.get(f"{root}favicon.ico").status == 200
        page.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_gradio_speaks_the_page_language_whatever_the_browser_says(browser, server, lang):
    """/zh/ in an English browser, /en/ in a Chinese one, opened as a person does: a fresh browser (context) in that
    locale, the address typed, then every tab in turn. Gradio's own words are the page's, never the browser's."""
    root, _ = server
    t = Translator(lang)
    other = "en" if lang == "zh" else "zh"
    context = browser.new_context(locale=BROWSER_LOCALE[lang], viewport={"width": 1360, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(PAGE_MS)
        page.goto(f"{root}{lang}/")
        assert page.evaluate("() => navigator.language") == {"zh": "zh-CN", "en": "en"}[lang]
        for tab in TABS:
            open_tab(page, t(tab))
            expect(page.get_by_role("tab", name=t(tab), exact=True)).to_have_attribute("aria-selected", "true")
            for _ in range(2):  # as the tab appears, and once its lists have loaded
                words = page.evaluate(PAGE_WORDS_JS)
                found = [word for word in GRADIO_WORDS[other] if re.search(rf"(?<![A-Za-z]){word}(?![A-Za-z])", words)]
                assert not found, (tab, found)
                page.wait_for_timeout(1500)
            if tab == "tab_data":  # the upload box speaks the page's language (not merely no other one)
                expect(page.locator("#data-upload")).to_contain_text(GRADIO_WORDS[lang][0])
                expect(page.locator("#data-upload")).to_contain_text(GRADIO_WORDS[lang][1])
    finally:
        context.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_uploads_runs_and_evaluation_always_show_the_current_state(browser, server, lang, tmp_path):
    root, workspace = server
    t = Translator(lang)
    page = new_page(browser, f"{root}{lang}/", BROWSER_LOCALE[lang])
    summary = page.locator("#data-summary")
    # Rows none of whose answer survives cutoff_len: the Data tab says so up front, not only Start (item 7); their
    # 200,000-character cells are clipped, saying how much, and the table stays inside the page (item 4).
    too_long = tmp_path / f"too-long-{lang}.jsonl"
    row = json.dumps({"instruction": "长" * 200_000, "output": "答"}, ensure_ascii=False)
    too_long.write_text(f"{row}\n{row}\n", encoding="utf-8")
    page.locator("#data-upload input[type=file]").set_input_files(str(too_long))
    expect(page.locator("#data-cutoff")).to_contain_text(
        t("data_cutoff_none", kept=0, total=2, cutoff=512).replace("**", "")
    )
    table = page.locator("#data-table")
    expect(table).to_contain_text(t("cell_clipped", count="198,000"))
    box = table.bounding_box()
    assert box["x"] + box["width"] <= 1360, box
    heights = [cell.bounding_box()["height"] for cell in table.locator("thead th").all()]
    assert heights and max(heights) < 60, heights  # headers stay on one line, the long cell wraps
    good = tmp_path / f"good-{lang}.json"
    shutil.copy(REPO / "assets" / "datasets" / "identity.json", good)
    page.locator("#data-upload input[type=file]").set_input_files(str(good))
    expect(page.locator("#data-summary")).to_contain_text(good.name)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a dataset", encoding="utf-8")
    page.locator("#data-upload input[type=file]").set_input_files(str(bad))
    expect(summary).to_contain_text("notes.txt")
    expect(summary).to_contain_text(t("data_upload_kept", dataset=good.name))
    expect(page.locator("#data-dataset input[role=combobox]")).to_have_value(good.name)
    expect(page.locator("#data-table")).to_contain_text("你是谁")  # still the good file's rows
    # After a reload the upload is listed by its name, never a server path.
    page.reload()
    options = options_once_listed(page, "data-dataset", good.name)
    assert good.name in options and not any("/" in option for option in options), options

    # A short run: Try it in Chat appears; the chat's side by side takes it as its second column at once.
    open_tab(page, t("tab_chat"))
    open_accordion(page, t("compare_title"))
    open_tab(page, t("tab_train"))
    fill_number(page, "field-max_steps", 60)
    run = start_run(page, workspace)
    wait_finished(page, t, run)
    expect(page.locator("#train-log-scale input")).to_be_checked()  # the loss fell more than a decade
    # The chart redraws on the next poll after the progress line says finished.
    page.wait_for_function("() => document.querySelector('#train-chart .js-plotly-plot')?.layout?.yaxis?.type == 'log'")
    expect(page.locator("#train-try-chat")).to_be_visible()
    # The log opens on its newest lines (on a busy machine too: the box is laid out late there).
    open_accordion(page, t("log_label"))
    log_box = page.locator("#train-log textarea")
    expect(log_box).to_have_value(re.compile("finished after"))
    page.wait_for_function(
        "() => { const b = document.querySelector('#train-log textarea');"
        " return b.scrollHeight <= b.clientHeight || b.scrollTop + b.clientHeight >= b.scrollHeight - 4; }"
    )
    expect(page.locator("#compare-choice-2 input[role=combobox]")).to_have_value(run, timeout=PAGE_MS)
    page.locator("#train-try-chat").click()
    expect(page.locator("#chat-adapter input[role=combobox]")).to_have_value(run)
    # A refused Start now steps the finished run's 100% bar aside instead of leaving it under the error.
    open_tab(page, t("tab_train"))
    fill_number(page, "field-learning_rate", -1)
    page.locator("#train-start").click()
    expect(page.locator("#train-progress")).to_contain_text(t("progress_refused"))
    expect(page.locator("#train-progress")).not_to_contain_text(run)
    fill_number(page, "field-learning_rate", 0.004)

    # Evaluate: headers in the page's language, the predictions inside the page, Abort live only meanwhile.
    open_tab(page, t("tab_evaluate"))
    fill_number(page, "eval-samples", 3)
    page.locator("#eval-start").click()
    expect(page.locator("#eval-predictions")).to_contain_text(t("eval_col_prediction"), timeout=SLOW_MS)
    expect(page.locator("#eval-metrics")).to_contain_text(t("metric_perplexity"))
    expect(page.locator("#eval-abort")).to_be_disabled()
    right = page.evaluate("() => document.querySelector('#eval-predictions').getBoundingClientRect().right")
    assert right <= page.viewport_size["width"]
    settled_text(page.locator("#eval-predictions"))
    # One sample in the histogram: whole numbers on its count axis.
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"instruction": "你好", "output": "你好！"}], ensure_ascii=False), encoding="utf-8")
    open_tab(page, t("tab_data"))
    page.locator("#data-upload input[type=file]").set_input_files(str(one))
    expect(page.locator("#data-summary")).to_contain_text("one.json")
    page.wait_for_function("() => document.querySelector('#data-lengths .ytick')")
    ticks = page.evaluate("() => Array.from(document.querySelectorAll('#data-lengths .ytick')).map(e => e.textContent)")
    assert ticks and all(tick.strip().isdigit() for tick in ticks), ticks

    # A failed run with a long error joins the Runs table (a live list): its headers stay horizontal, the error
    # wraps inside its cell and the table inside the page (item 4).
    failed = workspace / "runs" / f"20260101-000000-lora-failed-{lang}"
    failed.mkdir(parents=True)
    error = "ValueError: " + "the dataset row could not be read; " * 60
    status = {"state": "failed", "created": 1.0, "method": "lora", "error": error, "cause": "settings"}
    (failed / "status.json").write_text(json.dumps(status), encoding="utf-8")
    open_tab(page, t("tab_runs"))
    table = page.locator("#runs-table")
    expect(table).to_contain_text(failed.name)
    expect(table).to_contain_text("the dataset row could not be read")
    box = table.bounding_box()
    assert box["x"] + box["width"] <= 1360, box
    heights = [cell.bounding_box()["height"] for cell in table.locator("thead th").all()]
    assert heights and max(heights) < 100, heights  # two lines at most ("best eval loss"), never a letter per line
    page.close()

"""The workbench in a real browser: Playwright driving Debian's chromium against a real `launch.py`.

The whole flow in zh and in en, as a user clicks it: upload → preview → train → chart has points → abort →
resume → finish → chat answer changes once the adapter is hot-loaded → side by side → download the zip → the
zip loads with peft. Plus: a refresh during training, a second tab's Start refused, the browser closing while
training goes on, auth, and path traversal.
"""

from __future__ import annotations

import shutil
import time
import zipfile

import pytest

from tests.browser import (
    PAGE_MS,
    SLOW_MS,
    chart_points,
    fill_number,
    open_accordion,
    open_tab,
    pick,
    screenshot,
    settled_text,
    start_run,
)
from tests.conftest import REPO
from tests.ui_server import running_ui
from webui.locale import Translator

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
QUESTION = "你是谁？"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_model_dir):
    """One workbench process; its /en/ and /zh/ pages share the workspace and the training job."""
    workspace = tmp_path_factory.mktemp("browser") / "workspace"
    with running_ui(workspace, lang="en") as url:
        yield url.removesuffix("en/"), workspace


def new_page(browser, url: str, locale: str = "en-US"):
    page = browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True, locale=locale)
    page.set_default_timeout(PAGE_MS)
    page.goto(url)
    expect(page.locator("#data-summary")).not_to_be_empty(timeout=PAGE_MS)
    return page


def ask(page, text: str) -> str:
    replies = page.locator("#chat-history [data-testid=bot]")
    before = replies.count()
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-send").click()
    expect(replies).to_have_count(before + 1)
    return settled_text(replies.last)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_whole_flow_in_the_browser(browser, server, lang, tmp_path, demo_model_dir):
    root, workspace = server
    t = Translator(lang)
    page = new_page(browser, f"{root}{lang}/", {"zh": "zh-CN", "en": "en-US"}[lang])  # each in its own language
    shots = tmp_path / "screenshots"

    # Data: upload a file; its format, rows, rendered sample and token lengths appear.
    upload = tmp_path / f"my-identity-{lang}.json"
    shutil.copy(REPO / "assets" / "datasets" / "identity.json", upload)
    page.locator("#data-upload input[type=file]").set_input_files(str(upload))
    expect(page.locator("#data-summary")).to_contain_text("alpaca")
    expect(page.locator("#data-summary")).to_contain_text(upload.name)
    expect(page.locator("#data-table")).to_contain_text(QUESTION)
    expect(page.locator("#data-sample .gw-loss").first).to_be_visible()
    page.wait_for_function("() => document.querySelector('#data-lengths .js-plotly-plot')")
    screenshot(page, f"{lang}-1-data", shots)

    # Train: the chart draws from the first steps; abort; resume; finish.
    open_tab(page, t("tab_train"))
    expect(page.locator("#train-abort")).to_be_disabled()  # nothing to abort yet
    fill_number(page, "field-max_steps", 300)
    fill_number(page, "field-learning_rate", 0.002)  # 300 steps at the 4-epoch default's rate would overfit
    run = start_run(page, workspace)
    expect(page.locator("#train-message")).to_contain_text(t("started", run="").split(" ")[0])
    expect(page.locator("#train-progress")).to_contain_text(run)
    page.wait_for_function(
        "() => { const p = document.querySelector('#train-chart .js-plotly-plot');"
        " return p && p.data && p.data[0] && p.data[0].y && p.data[0].y.length >= 3; }",
        timeout=SLOW_MS,
    )
    screenshot(page, f"{lang}-2-train", shots)
    page.locator("#train-abort").click()
    expect(page.locator("#train-progress")).to_contain_text(t.state("aborted"), timeout=SLOW_MS)
    aborted_points = chart_points(page, "train-chart")
    assert 3 <= aborted_points < 300
    expect(page.locator("#train-resume")).to_be_enabled()
    page.locator("#train-resume").click()
    expect(page.locator("#train-progress")).to_contain_text(t.state("finished"), timeout=SLOW_MS)
    expect(page.locator("#train-progress")).to_contain_text("300/300")
    page.wait_for_function(
        "() => { const p = document.querySelector('#train-chart .js-plotly-plot');"
        " return p && p.data && p.data[0] && p.data[0].y.length >= 300; }"
    )
    expect(page.locator("#train-message")).to_be_empty()  # the "resuming…" notice went with the run's end

    # Chat: the base model babbles; with the adapter hot-loaded the answer is the trained one.
    open_tab(page, t("tab_chat"))
    open_accordion(page, t("gen_settings"))
    page.locator("#chat-greedy input").check()
    base_answer = ask(page, QUESTION)
    open_tab(page, t("tab_runs"))  # the runs tab opens the run in chat: its adapter, a fresh conversation
    pick(page, "runs-one", run)
    page.locator("#runs-open-chat").click()
    expect(page.locator("#chat-adapter input[role=combobox]")).to_have_value(run)
    expect(page.locator("#chat-history [data-testid=bot]")).to_have_count(0)
    tuned_answer = ask(page, QUESTION)
    assert "小智" in tuned_answer and tuned_answer != base_answer
    assert "Xiaozhi" in ask(page, "Who are you?")  # multi-turn, same adapter
    screenshot(page, f"{lang}-3-chat", shots)

    # Side by side: the base in column 1, the adapter in column 2.
    open_accordion(page, t("compare_title"))
    page.locator("#compare-prompt textarea").fill(QUESTION)
    pick(page, "compare-choice-2", run)
    page.locator("#compare-go").click()
    answers = [settled_text(page.locator(f"#compare-answer-{n}")) for n in (1, 2)]
    assert "小智" in answers[1] and answers[0] != answers[1]
    screenshot(page, f"{lang}-4-compare", shots)

    # Export: one click downloads a zip that peft loads.
    open_tab(page, t("tab_export"))
    pick(page, "export-run", run)
    expect(page.locator("#export-notice")).to_contain_text(".zip")
    with page.expect_download() as download:
        page.locator("#export-download").click()
    archive = tmp_path / "adapter.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "adapter")
    from peft import PeftModel

    from core.models.loader import load_model

    model = PeftModel.from_pretrained(load_model(str(demo_model_dir)), str(tmp_path / "adapter"))
    assert any("lora_A" in name for name, _ in model.named_parameters())
    screenshot(page, f"{lang}-5-export", shots)

    # The other tabs render too (screenshots for the docs).
    for number, tab in ((6, "tab_runs"), (7, "tab_evaluate")):
        open_tab(page, t(tab))
        page.wait_for_timeout(800)
        screenshot(page, f"{lang}-{number}-{tab.removeprefix('tab_')}", shots)
    page.close()


def test_language_switch_keeps_the_same_workbench(browser, server):
    root, _ = server
    page = new_page(browser, f"{root}en/")
    open_tab(page, Translator("en")("tab_runs"))
    page.wait_for_function("() => location.hash === '#runs'")
    page.locator("#switch-language").click()
    runs_tab = page.get_by_role("tab", name=Translator("zh")("tab_runs"), exact=True)
    expect(runs_tab).to_have_attribute("aria-selected", "true", timeout=PAGE_MS)  # the same tab, the other language
    assert page.url.endswith("/zh/#runs")
    page.close()


def test_refresh_second_tab_and_closed_browser_during_training(browser, server):
    root, workspace = server
    t = Translator("en")
    first = new_page(browser, f"{root}en/")
    open_tab(first, t("tab_train"))
    fill_number(first, "field-max_steps", 5000)
    run = start_run(first, workspace)
    expect(first.locator("#train-message")).to_contain_text(t("started", run="").split(" ")[0])
    expect(first.locator("#train-progress")).to_contain_text(t.state("running"), timeout=SLOW_MS)

    # A refresh shows the same run, still training, with its chart and its settings in the form.
    first.reload()
    open_tab(first, t("tab_train"))
    expect(first.locator("#train-progress")).to_contain_text(run)
    expect(first.locator("#field-max_steps input")).to_have_value("5000")
    expect(first.locator("#train-progress")).to_contain_text(t.state("running"))
    first.wait_for_function(
        "() => { const p = document.querySelector('#train-chart .js-plotly-plot');"
        " return p && p.data && p.data[0] && p.data[0].y && p.data[0].y.length >= 1; }",
        timeout=SLOW_MS,
    )

    # A second tab (here in the other language) sees it and its Start is refused with the run's name.
    second = new_page(browser, f"{root}zh/")
    open_tab(second, Translator("zh")("tab_train"))
    second.locator("#train-start").click()
    expect(second.locator("#train-message")).to_contain_text(Translator("zh")("busy", run=run))

    # Every page closes: training goes on without a browser.
    first.close()
    second.close()
    from core.runs import read_status

    step = read_status(workspace / "runs" / run).get("step", 0)
    deadline = time.time() + 900  # a state to reach, not a time: it returns at the next step
    while read_status(workspace / "runs" / run).get("step", 0) <= step:  # it keeps stepping with no page open
        assert time.time() < deadline and read_status(workspace / "runs" / run)["state"] == "running"
        time.sleep(0.2)

    # A new page can still stop it.
    third = new_page(browser, f"{root}en/")
    open_tab(third, t("tab_train"))
    third.locator("#train-abort").click()
    expect(third.locator("#train-progress")).to_contain_text(t.state("aborted"), timeout=SLOW_MS)
    expect(third.locator("#train-abort")).to_be_disabled()
    third.close()


def test_auth_is_required_when_set(browser, tmp_path, demo_model_dir):
    with running_ui(tmp_path / "ws", lang="en", extra_args=("--auth", "alice:s3cret")) as url:
        page = browser.new_page()
        page.goto(url)
        expect(page.locator("#data-summary")).to_have_count(0)
        page.locator("input[type=password]").wait_for()
        page.locator("input[type=text], input[name=username]").first.fill("alice")
        page.locator("input[type=password]").fill("wrong")
        page.locator("input[type=password]").press("Enter")
        page.wait_for_timeout(1500)
        expect(page.locator("#data-summary")).to_have_count(0)
        page.goto(url)
        page.locator("input[type=text], input[name=username]").first.fill("alice")
        page.locator("input[type=password]").fill("s3cret")
        page.locator("input[type=password]").press("Enter")
        expect(page.locator("#data-summary")).to_contain_text("alpaca", timeout=PAGE_MS)
        page.close()


def test_path_traversal_is_refused(browser, server):
    root, workspace = server
    page = new_page(browser, f"{root}en/")
    secret = workspace.parent / "secret.txt"
    secret.write_text("do not serve", encoding="utf-8")
    for route in (
        "gradio_api/file=/etc/passwd",
        f"gradio_api/file={secret}",
        "gradio_api/file=../../../../etc/passwd",
        "gradio_api/file=%2e%2e/%2e%2e/etc/passwd",
    ):
        response = page.request.get(f"{root}en/{route}")
        assert response.status in (400, 403, 404), (route, response.status)
        assert "root:" not in response.text() and "do not serve" not in response.text()
    # Through the UI: a run name that climbs out of the workspace is refused with a message, no download.
    open_tab(page, Translator("en")("tab_export"))
    notice, error = page.locator("#export-notice"), Translator("en")("error")
    for _ in range(3):  # a live list refresh (a run of an earlier test settling) may replace the typed name once
        pick(page, "export-run", "../../../etc")
        try:
            expect(notice).to_contain_text(error, timeout=15_000)
            break
        except AssertionError:
            continue
    expect(notice).to_contain_text(error)
    page.close()

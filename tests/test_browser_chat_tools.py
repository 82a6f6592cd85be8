"""A thinking, tool-calling GLM in chromium, in zh and en (Chinese and English browser locales): a newcomer picks the
MoE demo and the demo tool-calling set, trains, and in Chat sees the reasoning folded into a collapsed thought and
the tool call shown as a call; types the tool's result and gets the final answer; side by side folds the reasoning
too, and a vote stores the answers with their reasoning and the call (and the tools) in the feedback file."""

from __future__ import annotations

import json
import re

import pytest

from core.data.readers import resolve_dataset
from tests.browser import (
    PAGE_MS,
    fill_number,
    open_accordion,
    open_tab,
    options_once_listed,
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

ROWS = json.loads(resolve_dataset("tool_calls").read_text(encoding="utf-8"))
QUESTION = "北京今天天气怎么样？"


def weather_result(city: str) -> str:
    """The demo set's tool result for `city` (the tiny model may ask about a city it saw, not the one asked for)."""
    return next(
        row["messages"][2]["content"] for row in ROWS if f'"city": "{city}"' in row["messages"][2].get("content", "")
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_model_dir):
    workspace = tmp_path_factory.mktemp("chat-tools-browser") / "workspace"
    with running_ui(workspace, lang="en") as url:
        yield url.removesuffix("en/"), workspace


def new_page(browser, root: str, lang: str, locale: str):
    page = browser.new_page(viewport={"width": 1360, "height": 900}, locale=locale)
    page.set_default_timeout(PAGE_MS)
    page.goto(f"{root}{lang}/")
    expect(page.locator("#data-summary")).not_to_be_empty(timeout=PAGE_MS)
    return page


def test_a_newcomer_trains_a_tool_caller_and_answers_its_call(browser, server, tmp_path):
    """Trained once from a Chinese page (zh-CN locale); its chat is then driven in zh and, from an English page in an
    en-US locale that picks the run by hand, in en."""
    root, workspace = server
    t = Translator("zh")
    shots = tmp_path / "screenshots"
    page = new_page(browser, root, "zh", "zh-CN")

    # The demo tool-calling set, the MoE demo, a short training that teaches it to call a tool.
    pick(page, "data-dataset", "tool_calls")
    expect(page.locator("#data-summary")).to_contain_text("tool_calls")
    open_tab(page, t("tab_train"))
    pick(page, "field-model_name_or_path", "demo-moe")
    expect(page.locator("#field-learning_rate input")).to_have_value("0.004")  # the demo's suggestion, awaited
    fill_number(page, "field-num_train_epochs", 20)
    fill_number(page, "field-learning_rate", 0.005)
    run = start_run(page, workspace)
    wait_finished(page, t, run)
    page.locator("#train-try-chat").click()
    expect(page.locator("#chat-model input[role=combobox]")).to_have_value("demo-moe")
    expect(page.locator("#chat-adapter input[role=combobox]")).to_have_value(run)
    chat_with_the_tool_caller(page, t, run, workspace, shots)
    page.close()

    t = Translator("en")
    page = new_page(browser, root, "en", "en-US")
    open_tab(page, t("tab_chat"))
    pick(page, "chat-model", "demo-moe")
    options_once_listed(page, "chat-adapter", run)
    pick(page, "chat-adapter", run)
    expect(page.locator("#chat-adapter input[role=combobox]")).to_have_value(run)
    chat_with_the_tool_caller(page, t, run, workspace, shots)
    page.close()


def chat_with_the_tool_caller(page, t: Translator, run: str, workspace, shots) -> None:
    lang = t.lang
    # Chat: the reasoning is a collapsed thought with its length in tokens; the call is a call, not markup.
    open_accordion(page, t("gen_settings"))
    page.locator("#chat-greedy input").check()
    page.locator("#chat-input textarea").fill(QUESTION)
    page.locator("#chat-send").click()
    expect(page.locator("#chat-tool-result textarea")).to_be_visible(timeout=PAGE_MS)
    thought = page.locator("#chat-history .thought-group", has_text=t("chat_thinking")).first
    expect(thought).to_contain_text(re.compile(t("chat_thinking_tokens", n=r"\d+")))
    expect(thought.locator(".title").first).not_to_have_class(re.compile("expanded"))  # collapsed
    # The reasoning (which names the tool) is folded away until the title is clicked.
    expect(thought).not_to_contain_text("get_weather", use_inner_text=True)
    call = page.locator("#chat-history .thought-group", has_text=t("chat_tool_call", name="get_weather")).first
    expect(call).to_contain_text('"city"')
    expect(page.locator("#chat-history")).not_to_contain_text("<tool_call>")
    city = re.search(r'"city":\s*"([^"]+)"', call.inner_text()).group(1)
    expect(page.locator("#chat-tool-result-label")).to_contain_text("get_weather")
    thought.locator(".title").first.click()
    expect(thought).to_contain_text("get_weather", use_inner_text=True)
    screenshot(page, f"{lang}-10-chat-tool-call", shots)

    # The tool's result, typed by the person, continues the conversation: the final answer uses it.
    page.locator("#chat-tool-result textarea").fill(weather_result(city))
    page.locator("#chat-tool-result-send").click()
    expect(page.locator("#chat-tool-result textarea")).to_be_hidden(timeout=PAGE_MS)
    answer = settled_text(page.locator("#chat-history [data-testid=bot]").last)
    assert city in answer and "°C" in answer, answer
    expect(page.locator("#chat-history")).to_contain_text(t("chat_tool_result_title", name="get_weather"))
    screenshot(page, f"{lang}-11-chat-tool-answer", shots)

    # Side by side: the base and the run; the run's reasoning folded, its call shown as a call; a vote keeps both.
    open_accordion(page, t("compare_title"))
    expect(page.locator("#compare-choice-2 input[role=combobox]")).to_have_value(run, timeout=PAGE_MS)
    page.locator("#compare-prompt textarea").fill(QUESTION)
    page.locator("#compare-go").click()
    expect(page.locator("#vote-better-2")).to_be_enabled(timeout=PAGE_MS)
    column = page.locator("#compare-answer-2")
    expect(column.locator("details summary")).to_contain_text(t("chat_thinking"))
    assert not column.locator("details").first.evaluate("details => details.open")
    expect(column).to_contain_text(t("chat_tool_call", name="get_weather"))
    page.locator("#vote-better-2").click()
    expect(page.locator("#vote-notice")).to_contain_text(t("vote_recorded_better", column=2), timeout=PAGE_MS)
    expect(page.locator("#vote-better-2")).to_have_class(re.compile("primary"))  # the chosen verdict stays marked
    expect(page.locator("#vote-worse-2")).to_be_disabled()
    rows = [json.loads(line) for line in (workspace / "feedback" / "chat.jsonl").read_text().splitlines()]
    chosen = rows[-1]["chosen"]
    assert rows[-1]["chosen_run"] == run and "<think>" in chosen and "</think>" in chosen
    assert "<tool_call>get_weather" in chosen and [tool["function"]["name"] for tool in rows[-1]["tools"]] == [
        "get_weather",
        "calculate",
    ]
    column.locator("details summary").click()  # the reasoning, on demand
    assert column.locator("details").first.evaluate("details => details.open")
    screenshot(page, f"{lang}-12-compare-tool-call", shots)

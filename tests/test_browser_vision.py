"""Images in chromium, as a newcomer on an English page (en-US locale) meets them: the vision demo model and the
`colours` demo set show each sample's image with its size and image tokens in the Data tab; a short full run on
the CPU; then Chat, with an image uploaded beside the question, names its colour, and the image stays in the
conversation; a second image pasted from the clipboard is answered too."""

from __future__ import annotations

import base64
import io
import random

import pytest

from scripts.make_colour_images import colour_image
from tests.browser import PAGE_MS, fill_number, open_tab, pick, screenshot, settled_text, start_run, wait_finished
from tests.ui_server import running_ui
from webui.locale import Translator

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_model_dir):
    workspace = tmp_path_factory.mktemp("vision-browser") / "workspace"
    with running_ui(workspace, lang="en") as url:
        yield url, workspace


def test_a_newcomer_trains_on_images_and_asks_about_a_new_one(browser, server, tmp_path):
    url, workspace = server
    t = Translator("en")
    page = browser.new_page(viewport={"width": 1360, "height": 900}, locale="en-US")
    page.set_default_timeout(PAGE_MS)
    page.goto(url)
    expect(page.locator("#data-summary")).not_to_be_empty(timeout=PAGE_MS)

    # The vision demo and the colours set: the sample shows its image, its size and the tokens it costs.
    open_tab(page, t("tab_train"))
    pick(page, "field-model_name_or_path", "demo-vision")
    open_tab(page, t("tab_data"))
    pick(page, "data-dataset", "colours")
    sample = page.locator("#data-sample")
    expect(sample.locator("img").first).to_be_visible(timeout=PAGE_MS)
    expect(sample).to_contain_text("image tokens")
    expect(sample).to_contain_text("<|image|>×")
    screenshot(page, "vision-data", tmp_path)

    # Five epochs of full fine-tuning, the vision tower frozen (the default).
    open_tab(page, t("tab_train"))
    expect(page.locator("#train-dataset input[role=combobox]")).to_have_value("colours")  # follows the Data tab
    page.locator("#field-finetuning_type").get_by_text(t("method_full"), exact=True).click()
    # The suggested rate is the demo model's (a random model needs large steps), not a real model's 1e-05: it
    # arrives from the server after the click, so it is awaited before anything else is typed.
    expect(page.locator("#field-learning_rate input")).to_have_value("0.001")
    fill_number(page, "field-num_train_epochs", 5)
    run = start_run(page, workspace)
    wait_finished(page, t, run)
    page.locator("#train-try-chat").click()
    expect(page.locator("#chat-model input[role=combobox]")).to_have_value(run)

    # A blue image it never saw, uploaded beside the question.
    image = tmp_path / "blue.png"
    colour_image("blue", random.Random(77)).save(image)
    page.locator("#chat-image input[type=file]").set_input_files(str(image))
    page.locator("#chat-input textarea").fill("What colour is this image?")
    page.locator("#chat-send").click()
    history = page.locator("#chat-history")
    answer = history.locator("[data-testid=bot]").last
    assert "Blue" in settled_text(answer)
    expect(history.locator("img").first).to_be_visible()  # the question's image stays in the conversation
    expect(page.locator("#chat-image img")).to_have_count(0)  # and the box is empty for the next question
    screenshot(page, "vision-chat", tmp_path)

    # A new conversation, its image a red one pasted from the clipboard (a screenshot's usual way in), not a file.
    page.locator("#chat-clear").click()
    expect(history.locator("[data-testid=bot]")).to_have_count(0)
    origin = url.split("/en/")[0]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    red = io.BytesIO()
    colour_image("red", random.Random(78)).save(red, format="PNG")
    page.evaluate(
        """async (b64) => {
            const blob = await (await fetch('data:image/png;base64,' + b64)).blob();
            await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]);
        }""",
        base64.b64encode(red.getvalue()).decode(),
    )
    box = page.locator("#chat-image")
    box.get_by_role("button", name="Paste from clipboard").first.click()
    box.locator(".upload-container").first.click()
    expect(box.locator("img")).to_have_count(1)
    page.locator("#chat-input textarea").fill("What colour is this image?")
    page.locator("#chat-send").click()
    expect(history.locator("[data-testid=bot]")).to_have_count(1)
    expect(history.locator("img")).to_have_count(1)
    assert "Red" in settled_text(history.locator("[data-testid=bot]").last)

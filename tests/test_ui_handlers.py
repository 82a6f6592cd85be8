"""The tabs' one error path (webui.context.handler): our own errors reach the page as their sentence, anything else
as "internal error, see log.txt" with its stack in the log, for plain and for streaming handlers alike."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from core.errors import RunStateError
from webui.context import UIContext
from webui.locale import Translator
from webui.tabs import chat_handlers, export_handlers


def page(**workbench) -> UIContext:
    return UIContext(SimpleNamespace(**workbench), Translator("en"))  # type: ignore[arg-type]


def raising(exc: BaseException):
    def call(*_args, **_kwargs):
        raise exc

    return call


def test_our_error_shows_its_sentence_and_logs_no_stack(caplog):
    ours = RunStateError("run.nothing_to_evaluate", run="lora-1")
    ctx = page(export_zip=raising(ours))
    with caplog.at_level(logging.ERROR, logger="glm_workbench.ui"):
        file, notice = export_handlers.prepare(ctx, "lora-1")
    assert file is None
    assert notice == f"**Error:** {ours.render('en')}"
    assert "lora-1" in notice
    assert not caplog.records


def test_a_bug_says_internal_error_and_logs_the_stack(caplog):
    ctx = page(export_zip=raising(ZeroDivisionError("a bug of ours")))
    with caplog.at_level(logging.ERROR, logger="glm_workbench.ui"):
        file, notice = export_handlers.prepare(ctx, "lora-1")
    assert file is None
    assert notice == f"**Error:** {Translator('en')('internal_error')}"
    assert "log.txt" in notice and "ZeroDivisionError" not in notice  # no traceback or class name on the page
    (record,) = caplog.records
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError
    assert "a bug of ours" in caplog.text and "Traceback" in caplog.text


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_bug_while_a_reply_streams_keeps_the_question_and_says_so(caplog, lang):
    def replies(*_args, **_kwargs):
        raise RuntimeError("engine broke")
        yield  # a generator, as the engine's is

    ctx = UIContext(SimpleNamespace(chat_replies=replies), Translator(lang))  # type: ignore[arg-type]
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with caplog.at_level(logging.ERROR, logger="glm_workbench.ui"):
        outputs = list(chat_handlers.respond(ctx, "and now?", history, "demo", "", "", 0.7, 0.9, 16, True))
    shown, message, notice, *_box = outputs[-1]
    assert shown == history  # the conversation as it was, not the unanswered question
    assert message == "and now?"  # kept in the box to send again
    assert Translator(lang)("internal_error") in notice
    assert "engine broke" in caplog.text


def test_a_bad_tools_box_is_named_before_anything_is_sent():
    ctx = page(chat_replies=raising(AssertionError("must not generate")))
    outputs = list(chat_handlers.respond(ctx, "hi", [], "demo", "", "", 0.7, 0.9, 16, True, 1.0, True, "[not json"))
    (shown, message, notice, *_box) = outputs[-1]
    assert shown == [] and message == "hi"
    assert notice.startswith("**Error:**") and Translator("en")("internal_error") not in notice

"""zh and en are complete: the same keys in both tables, and the engine's messages (data errors, row problems,
invalid settings, failed runs) reach the Chinese page in Chinese, with their file names, rows and values kept."""

from __future__ import annotations

import re

import pytest

from core import i18n
from core.config import ConfigError, RunConfig
from core.errors import DataError
from core.training.runner import explain_error
from core.workbench import Workbench
from tests.bad_inputs import UNUSABLE, write
from webui.locale import LANGUAGES, Translator, table

ENGLISH_PHRASE = re.compile(r"\b[A-Za-z]{2,}\b[ ,]+\b[A-Za-z]{2,}\b[ ,]+\b[A-Za-z]{2,}\b")


def untranslated(text: str) -> str | None:
    """An English phrase of three words or more, outside quoted names, Python's own JSON message (kept
    verbatim in full-width brackets), lists of choices and the list of column sets."""
    kept = re.sub(r"'[^']*'|\"[^\"]*\"|（[A-Z][^）]*）|——.*|：[\w.-]+(, [\w.-]+)+", "", text)
    found = ENGLISH_PHRASE.search(kept)
    return found.group(0) if found else None


@pytest.mark.parametrize("tables", [table, i18n.table], ids=["page", "engine"])
def test_both_tables_have_the_same_keys_and_placeholders(tables):
    zh, en = tables("zh"), tables("en")
    assert set(zh) == set(en)
    for key in en:
        assert set(re.findall(r"{(\w+)}", zh[key])) == set(re.findall(r"{(\w+)}", en[key])), key


def test_no_message_is_translated_by_pattern():
    """The engine's sentences come from its tables by code: no table of regular expressions is left."""
    from pathlib import Path

    locales = Path(__file__).resolve().parents[1] / "webui" / "locales"
    assert sorted(p.name for p in locales.iterdir()) == ["en.json", "zh.json"]


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_every_corpus_message_reads_in_chinese(case, tmp_path):
    name, content, _ = UNUSABLE[case]
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as raised:
        Workbench(tmp_path / "ws").preview_dataset(str(path))
    english = str(raised.value)
    chinese = Translator("zh").message(raised.value)
    assert re.search(r"[\u4e00-\u9fff]", chinese), chinese
    assert untranslated(chinese) is None, (english, chinese)
    assert Translator("en").message(raised.value) == english
    for detail in re.findall(r"\d+|'[^']+'", english):  # line numbers, rows, names survive the translation
        assert detail in chinese, (detail, chinese)


def test_invalid_settings_read_in_chinese():
    config = RunConfig(
        learning_rate=-1,
        per_device_train_batch_size=0,
        lora_rank=0,
        template="nope",
        model_name_or_path="",
        num_train_epochs=0,
        lr_scheduler_type="sometimes",
    )
    with pytest.raises(ConfigError) as raised:
        config.validate()
    english = str(raised.value)
    chinese = Translator("zh").message(raised.value)
    assert len(english.splitlines()) >= 6
    for line in chinese.splitlines():
        assert untranslated(line) is None, (english, chinese)
        assert re.search(r"[\u4e00-\u9fff]", line), line


def test_failed_runs_read_in_chinese():
    import errno

    import torch

    for exc in (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        OSError(errno.ENOSPC, "No space left on device", "/ws/runs/r/checkpoints/x/optimizer.pt"),
    ):
        chinese = Translator("zh").message(explain_error(exc))
        assert chinese.startswith(("显存/内存不足", "磁盘已满")), chinese
        assert untranslated(chinese.split("详情：")[0]) is None, chinese


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_state_has_a_label(lang):
    t = Translator(lang)
    for state in ("queued", "running", "finished", "failed", "aborted", "interrupted"):
        assert t.state(state) != f"state.{state}"


def test_every_engine_sentence_reads_in_chinese():
    """Each code's Chinese sentence is Chinese (beyond placeholders and the four that only join other sentences), so
    a message added in English only, or copied across untranslated, fails here."""
    joiners = {"config.problem_labelled_no_value", "config.problem_no_value", "config.problems", "where.file"}
    for code, sentence in i18n.table("zh").items():
        text = re.sub(r"{\w+}", "", sentence)
        if code not in joiners:
            assert re.search(r"[\u4e00-\u9fff]", text), code
        assert untranslated(text) is None, code

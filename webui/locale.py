"""Every visible string, by key, from one table per language (locales/en.json, locales/zh.json)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

LANGUAGES = ("zh", "en")
LOCALE_DIR = Path(__file__).resolve().parent / "locales"


@lru_cache(maxsize=None)
def table(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language '{lang}'; choose one of {', '.join(LANGUAGES)}")
    return json.loads((LOCALE_DIR / f"{lang}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def message_patterns(lang: str) -> tuple[tuple[re.Pattern, str], ...]:
    """The engine speaks English (CLI, logs, status files); locales/<lang>_messages.json turns its messages
    into the page's language: [regular expression, replacement] pairs, applied in order."""
    path = LOCALE_DIR / f"{lang}_messages.json"
    if not path.is_file():
        return ()
    pairs = json.loads(path.read_text(encoding="utf-8"))["patterns"]
    return tuple((re.compile(pattern, re.MULTILINE), replacement) for pattern, replacement in pairs)


class Translator:
    """`t("key", name=value)` -> the string in this language, formatted."""

    def __init__(self, lang: str = "zh"):
        self.lang = lang
        self.strings = table(lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self.strings[key]
        return text.format(**values) if values else text

    def get(self, key: str, fallback: str) -> str:
        """The string for `key` if the table has one (a run state, a column name), else `fallback`."""
        return self.strings.get(key, fallback)

    def message(self, text: str) -> str:
        """An engine message (an error, a row problem) in this language; file names and values are kept."""
        for pattern, replacement in message_patterns(self.lang):
            text = pattern.sub(replacement, text)
        return text

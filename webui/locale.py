"""Every visible string, by key, from one table per language (locales/en.json, locales/zh.json)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

LANGUAGES = ("zh", "en")
LOCALE_DIR = Path(__file__).resolve().parent / "locales"


@lru_cache(maxsize=None)
def table(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language '{lang}'; choose one of {', '.join(LANGUAGES)}")
    return json.loads((LOCALE_DIR / f"{lang}.json").read_text(encoding="utf-8"))


class Translator:
    """`t("key", name=value)` -> the string in this language, formatted."""

    def __init__(self, lang: str = "zh"):
        self.lang = lang
        self.strings = table(lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self.strings[key]
        return text.format(**values) if values else text

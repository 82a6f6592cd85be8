"""Every visible string, by key: the page's own words (locales/{zh,en}.json) and the engine's sentences
(core/locales), both rendered in the page's language. The engine's errors arrive as codes and parameters,
never as English text to be translated after the fact."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from core.errors import ConfigError, WorkbenchError, describe
from core.i18n import LANGUAGES, Message, with_plurals

__all__ = ["LANGUAGES", "Translator", "table"]


@cache
def table(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language '{lang}'; choose one of {', '.join(LANGUAGES)}")
    return json.loads(files("webui").joinpath("locales", f"{lang}.json").read_text(encoding="utf-8"))  # package data


class Translator:
    """`t("key", name=value)` -> the string in this language, formatted."""

    def __init__(self, lang: str = "zh"):
        self.lang = lang
        self.strings = table(lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self.strings[key]
        return with_plurals(text, values).format(**values) if values else text

    def get(self, key: str, fallback: str) -> str:
        """The string for `key` if the table has one (a column name), else `fallback`."""
        return self.strings.get(key, fallback)

    def label(self, key: str) -> str:
        """A setting's name as the form labels it (`field_<key>`), or the key itself."""
        return self.strings.get(f"field_{key}", key)

    def state(self, state: str) -> str:
        return Message(f"state.{state}").render(self.lang)

    def message(self, item: Any) -> str:
        """An engine message in this language: an error (settings named by their form label), a Message, a row
        problem, or a Message stored as JSON in status.json. Anything else that is not ours is a bug."""
        if isinstance(item, ConfigError):
            return item.render(self.lang, self.label)
        if isinstance(item, WorkbenchError):
            return item.render(self.lang)
        if isinstance(item, BaseException):
            return describe(item, self.lang)
        if isinstance(item, dict):
            item = Message.from_json(item) or ""
        if hasattr(item, "render"):
            return item.render(self.lang)
        return str(item)

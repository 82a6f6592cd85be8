"""The engine's sentences, by code, in every language: `Message("data.file_empty").render("zh")`.

The engine never writes a user-facing sentence inline: it names a message by code and parameters, and the
locale tables (core/locales/{en,zh}.json) hold the words. The CLI renders in `default_language()`, the web UI
in the page's language, log files in English. A parameter may itself be a `Message` (a row problem inside a
file error): it is rendered in the same language. A library's own text (pandas' CSV error, an OS error)
travels as a parameter, never as the sentence.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

LANGUAGES = ("zh", "en")


@cache
def table(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language '{lang}'; choose one of {', '.join(LANGUAGES)}")
    return json.loads(files("core").joinpath("locales", f"{lang}.json").read_text(encoding="utf-8"))  # package data


def default_language() -> str:
    """GLM_WORKBENCH_LANG if set, else zh when the terminal's locale is Chinese, else en."""
    chosen = os.environ.get("GLM_WORKBENCH_LANG", "").strip().lower()
    if chosen in LANGUAGES:
        return chosen
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


@dataclass(frozen=True)
class Message:
    """One sentence: a code in the locale tables and the values for its placeholders."""

    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def render(self, lang: str | None = None) -> str:
        lang = lang or "en"
        text = table(lang).get(self.code) or table("en").get(self.code) or self.code
        values = {key: render_value(value, lang) for key, value in self.params.items()}
        return with_plurals(text, values).format(**values) if values else text

    def __str__(self) -> str:
        return self.render("en")

    def to_json(self) -> dict[str, Any]:
        """A JSON form (status.json keeps failed runs' messages so each page renders them in its language)."""
        return {"code": self.code, "params": {key: _jsonable(value) for key, value in self.params.items()}}

    @classmethod
    def from_json(cls, data: Any) -> Message | None:
        if not isinstance(data, dict) or not isinstance(data.get("code"), str):
            return None
        if data["code"] not in table("en"):
            return None
        params = {
            key: cls.from_json(value) or value
            if isinstance(value, dict)
            else [cls.from_json(v) or v for v in value]
            if isinstance(value, list)
            else value
            for key, value in (data.get("params") or {}).items()
        }
        return cls(data["code"], params)


_PLURAL = re.compile(r"\{(\w+)\|([^|{}]*)\|([^|{}]*)\}")


def with_plurals(text: str, values: Mapping[str, Any]) -> str:
    """English number agreement: `{rows|row|rows}` becomes "row" when `rows` is 1, else "rows" (Chinese needs
    none). Done before str.format fills in the values."""

    def word(found: re.Match) -> str:
        value = values.get(found[1])
        return found[2] if value == 1 or value == "1" else found[3]

    return _PLURAL.sub(word, text)


def message(code: str, **params: Any) -> Message:
    return Message(code, params)


def render_value(value: Any, lang: str) -> Any:
    if isinstance(value, Message):
        return value.render(lang)
    if isinstance(value, (list, tuple)):
        return "; ".join(str(render_value(item, lang)) for item in value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)

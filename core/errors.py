"""One error vocabulary for the engine: every problem the user can act on is a `WorkbenchError`.

Each carries a `Message` (a code in the locale tables plus parameters), so the CLI, the web UI and status.json
say it in the reader's language. Anything else that escapes the engine is a bug, and is reported as one
("internal error, see log.txt"), never dressed up as the user's fault.

    WorkbenchError
      ConfigError      wrong settings: one ConfigProblem per key
      DataError        a data file: which file, which row, what is wrong
        UnknownColumnsError   no format matches the columns (a column mapping can fix it)
      ModelError       a model that cannot be found, loaded or converted
      RunStateError    a run in the wrong state for the action, a folder that is not free, a lock held
      ExportError      a zip or merge that cannot be made
      BusyError        a training job already runs in this process
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.i18n import Message, message


class WorkbenchError(Exception):
    """A problem phrased for the user: `render(lang)` says it; `str()` is the English sentence (logs)."""

    def __init__(self, code: str | Message, **params: Any):
        self.message = code if isinstance(code, Message) else message(code, **params)
        super().__init__(self.message.render("en"))

    @property
    def code(self) -> str:
        return self.message.code

    def __reduce__(self):
        # Pickled whole (a data worker process raises it in the parent): the message and every field travel.
        return _restore_error, (type(self), self.__dict__.copy())

    def render(self, lang: str | None = None, label: Callable[[str], str] | None = None) -> str:  # noqa: ARG002
        return self.message.render(lang)

    def __str__(self) -> str:
        return self.message.render("en")


class DataError(WorkbenchError):
    """A data problem; `path` and `row` say where (the sentence names the file and row)."""

    def __init__(self, code: str | Message, path: str | Path | None = None, row: int | None = None, **params: Any):
        self.detail = code if isinstance(code, Message) else message(code, **params)
        self.path = str(path) if path is not None else None
        self.row = row
        name = Path(self.path).name if self.path else None
        if name and row is not None:
            outer = message("where.file_row", file=name, row=row, message=self.detail)
        elif name:
            outer = message("where.file", file=name, message=self.detail)
        elif row is not None:
            outer = message("where.row", row=row, message=self.detail)
        else:
            outer = self.detail
        super().__init__(outer)

    def located(self, path: str | Path) -> DataError:
        """The same problem, now naming the file it is in."""
        return type(self)(self.detail, path, self.row)


class UnknownColumnsError(DataError):
    """No format matches the file's columns: a column mapping can fix it without editing the file."""


class ModelError(WorkbenchError):
    """A model that cannot be found, loaded or converted."""


class ConversionError(ModelError):
    """A ChatGLM-6B checkpoint that cannot be converted (core/models/chatglm_v1.py, its tokenizer in
    core/models/glm1/tokenization.py): a code of core/locales with its parameters."""


class RunStateError(WorkbenchError):
    """A run (or a folder) that is not in a state for the action: training, finished, locked, not empty."""


class ExportError(WorkbenchError):
    """A run that cannot be exported."""


class BusyError(WorkbenchError):
    """A training job is already running in this process (`run` names it)."""

    def __init__(self, run: str):
        self.run = run
        super().__init__("run.busy", run=run)


@dataclass(frozen=True)
class ConfigProblem:
    """One wrong setting: its key, what is wrong, and the value it had."""

    key: str
    problem: Message
    value: Any = None
    show_value: bool = True

    def as_message(self, label: Callable[[str], str] | None = None) -> Message:
        shown = label(self.key) if label else None
        code = "config.problem_labelled" if shown and shown != self.key else "config.problem"
        if not self.show_value:
            code += "_no_value"
        return message(code, key=self.key, label=shown or self.key, message=self.problem, value=repr(self.value))

    def render(self, lang: str | None = None, label: Callable[[str], str] | None = None) -> str:
        return self.as_message(label).render(lang)

    def __str__(self) -> str:
        return self.render("en")


class ConfigError(WorkbenchError):
    """Wrong settings, one line per key, so the user fixes them all in one round trip."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = list(problems)
        super().__init__(
            message("config.problems", problems=[p.as_message() for p in self.problems])
            if self.problems
            else message("config.invalid")
        )

    def render(self, lang: str | None = None, label: Callable[[str], str] | None = None) -> str:
        return "\n".join(problem.render(lang, label) for problem in self.problems)

    def __str__(self) -> str:
        return self.render("en")


def config_error(key: str, code: str, value: Any = None, show_value: bool = False, **params: Any) -> ConfigError:
    """A ConfigError about one key (files, flags and YAML problems that are not a field's value)."""
    return ConfigError([ConfigProblem(key, message(code, **params), value, show_value)])


def describe(exc: BaseException, lang: str | None = None) -> str:
    """What a user is told about `exc`: a WorkbenchError's sentence, or 'internal error' for anything else."""
    if isinstance(exc, WorkbenchError):
        return exc.render(lang)
    return internal_error(exc).render(lang)


def internal_error(exc: BaseException) -> Message:
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return message("internal_error", kind=type(exc).__name__, detail=detail)


def _restore_error(cls: type, state: dict[str, Any]) -> WorkbenchError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error.message.render("en"))
    return error

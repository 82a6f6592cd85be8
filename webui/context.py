"""What every tab builder receives: the workbench (all actions) and the translator (all strings), and the one
decorator every handler goes through, so a failure always reaches the page the same way."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import WorkbenchError
from core.workbench import Workbench
from webui.locale import Translator

log = logging.getLogger("glm_workbench.ui")


@dataclass
class UIContext:
    wb: Workbench
    t: Translator

    def reason(self, exc: BaseException) -> str:
        """The sentence for a failure, never a traceback. Our own errors say what to do; anything else is a bug
        of ours: the page says so and the stack goes to the log."""
        if isinstance(exc, WorkbenchError):
            return self.t.message(exc)
        log.error("internal error in the web UI", exc_info=exc)
        return self.t("internal_error")

    def error(self, exc: BaseException) -> str:
        """`reason` as an error line for a Markdown component."""
        return self.error_line(self.reason(exc))

    def error_line(self, reason: str) -> str:
        return f"**{self.t('error')}:** {reason}"  # gr.Markdown sanitizes any HTML in it

    def status_error(self, status: dict) -> str:
        """A failed run's message from status.json, in the page's language."""
        return self.t.message(status.get("error_message") or status.get("error") or "")


# on_error(ctx, reason, *the handler's inputs) -> the handler's outputs that show the failure (`reason`: the sentence)
OnError = Callable[..., Any]


def handler(on_error: OnError) -> Callable[[Callable], Callable]:
    """Every event handler of the tabs: `fn(ctx, *inputs)`. Whatever it raises becomes the outputs `on_error`
    builds from its sentence (usually `ctx.error_line(reason)` in the tab's message box, the other outputs left as
    they are); an error that is not a `WorkbenchError` is logged with its stack (`UIContext.reason`). Streaming
    handlers (generators) end with that one last update. Wire it with `functools.partial(fn, ctx)`: gradio reads
    the inputs from the wrapped signature."""

    def decorate(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def stream(ctx: UIContext, *args: Any, **kwargs: Any):
                try:
                    yield from fn(ctx, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the one place a handler's failure is turned into a message
                    yield on_error(ctx, ctx.reason(exc), *args, **kwargs)

            return stream

        @functools.wraps(fn)
        def call(ctx: UIContext, *args: Any, **kwargs: Any):
            try:
                return fn(ctx, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the one place a handler's failure is turned into a message
                return on_error(ctx, ctx.reason(exc), *args, **kwargs)

        return call

    return decorate

"""What every tab builder receives: the workbench (all actions) and the translator (all strings)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.errors import WorkbenchError
from core.workbench import Workbench
from webui.locale import Translator

log = logging.getLogger("glm_workbench.ui")


@dataclass
class UIContext:
    wb: Workbench
    t: Translator

    def error(self, exc: BaseException) -> str:
        """A user-facing error line for a Markdown component, never a traceback. Our own errors say what to
        do; anything else is a bug of ours: the page says so and the stack goes to the log."""
        if not isinstance(exc, WorkbenchError):
            log.error("internal error in the web UI", exc_info=exc)
        return f"**{self.t('error')}:** {self.t.message(exc)}"  # gr.Markdown sanitizes any HTML in it

    def status_error(self, status: dict) -> str:
        """A failed run's message from status.json, in the page's language."""
        return self.t.message(status.get("error_message") or status.get("error") or "")

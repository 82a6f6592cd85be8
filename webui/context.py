"""What every tab builder receives: the workbench (all actions) and the translator (all strings)."""

from __future__ import annotations

from dataclasses import dataclass

from core.workbench import Workbench
from webui.locale import Translator


@dataclass
class UIContext:
    wb: Workbench
    t: Translator

    def error(self, exc: Exception) -> str:
        """A user-facing error line for a Markdown component (never a traceback)."""
        return f"❌ **{self.t('error')}:** {self.t.message(str(exc))}"

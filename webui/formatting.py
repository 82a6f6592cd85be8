"""How numbers and times look on the page (the engine hands over plain values)."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """0:05, 12:34, 1:02:03, 30:00:00: hours keep counting past a day (a 30-hour run is not 6:00:00)."""
    if seconds is None:
        return "—"
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_loss(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None

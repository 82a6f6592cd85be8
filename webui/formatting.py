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


def reply_markdown(reply, t, tokens: int | None = None) -> str:
    """A reply (core.chat.turns.ChatReply) as Markdown: the reasoning folded away and opened on demand (with its
    length in tokens when known), the answer, then each tool call as a call (its name and JSON arguments)."""
    from core.chat.turns import call_text

    parts = []
    if reply.reasoning:
        summary = t("chat_thinking") + (" · " + t("chat_thinking_tokens", n=tokens) if tokens else "")
        parts.append(f"<details><summary>{summary}</summary>\n\n{reply.reasoning}\n\n</details>\n")
    if reply.content:
        parts.append(reply.content)
    for call in reply.tool_calls:
        parts.append(f"**{t('chat_tool_call', name=call['name'])}**\n```json\n{call_text(call)}\n```")
    return "\n\n".join(parts)

"""How numbers and times look on the page (the engine hands over plain values)."""

from __future__ import annotations

from core.chat.turns import call_text


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
    parts = []
    if reply.reasoning:
        summary = t("chat_thinking") + (" · " + t("chat_thinking_tokens", n=tokens) if tokens else "")
        parts.append(f"<details><summary>{summary}</summary>\n\n{reply.reasoning}\n\n</details>\n")
    if reply.content:
        parts.append(reply.content)
    for call in reply.tool_calls:
        parts.append(f"**{t('chat_tool_call', name=call['name'])}**\n```json\n{call_text(call)}\n```")
    return "\n\n".join(parts)


CELL_CHARS = 2_000  # the most of one cell's text a table shows: a 1M-token row must not weigh on the page
TEXT_CHARS = 20_000  # the most of one text the page shows whole (a rendered sample, an arena question)


def clip_cell(text: str, more: str = "… (+{count})", limit: int = CELL_CHARS) -> str:
    """`text` up to `limit` characters; beyond that, `more` (with {count}: how many were left out)."""
    if len(text) <= limit:
        return text
    return text[:limit] + more.format(count=f"{len(text) - limit:,}")


def _width(text: str) -> int:
    """Columns of monospace text: a CJK character is as wide as two Latin ones."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def column_widths(frame, least: int = 5, most: int = 40) -> list[str]:
    """Each column's share of the table's width (percentages summing to 100): what it holds (its longest header
    word, its typical cell) between `least` and `most` characters. Gradio otherwise sizes a column by its longest
    cell: one long error or answer pushes the others to a letter per line and the table off the page; with these
    shares long text wraps inside its cell and the headers stay horizontal."""
    needs = []
    for column in frame.columns:
        header = max((_width(word) for word in str(column).split()), default=1) + 1
        cells = sorted(_width(str(value)) for value in frame[column].tolist() if value is not None)
        typical = cells[int(0.75 * (len(cells) - 1))] if cells else 0
        needs.append(min(max(header, typical, least) + 2, most))  # + the cell's padding
    total = sum(needs) or 1
    shares = [round(100 * need / total, 1) for need in needs]
    return [f"{share}%" for share in shares]

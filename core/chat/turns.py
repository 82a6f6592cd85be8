"""A chat's turns as the page shows them and as the template reads them: reasoning, answers, tool calls, results.

The chat page keeps one list of messages (gradio's Chatbot value: role, content, metadata). A reply of a model of
the GLM-4.5 generation becomes several of them: a collapsed *thought* (its reasoning), the answer, and one entry
per tool call; a tool's result typed by the person is one more. Each carries a tag in `metadata["id"]`, so the
page's list turns back into the conversation the template renders (`conversation`): one assistant turn with
`reasoning`, `content` and `tool_calls`, then `tool` turns. The template itself drops the reasoning of turns
before the last question (core/data/glm45.py), as the model's own template does.

Nothing here imports gradio: these are plain dicts, tested without a browser, and the CLI reads replies the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.data.glm45 import GLM45, Reply, ThinkingFormat, parse_reply
from core.errors import DataError

REASONING, CALL, RESULT = "reasoning", "call", "result"  # the tags (metadata id prefixes) of the special entries

# The demo tool-calling set's tools (core/assets/datasets/tool_calls.json): the Tools box starts with them.
EXAMPLE_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "查询一个城市今天的天气",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "城市名"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "计算一个算术表达式",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
]


@dataclass
class ChatReply:
    """One reply as it grows: its parts, the reasoning's length in tokens, and whether it is whole."""

    content: str
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning_tokens: int = 0
    done: bool = False
    thinks: bool = False  # the model's template has reasoning (a GLM-4.5-generation model)
    tools_ignored: bool = False  # tools were given but the model's template has none: they were not offered

    def as_message(self) -> dict[str, Any]:
        """The assistant turn as the templates read it (core/data/formats.py's shape)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning:
            message["reasoning"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def parse_tools(text: str) -> list[dict[str, Any]] | None:
    """The Tools box: OpenAI's `tools` list as JSON (an empty box: no tools). Bad JSON or a wrong shape raises a
    DataError that says where and what."""
    if not (text or "").strip():
        return None
    try:
        tools = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError("chat.tools_json", line=exc.lineno, column=exc.colno, problem=exc.msg) from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise DataError("chat.tools_not_list", got=type(tools).__name__)
    for number, tool in enumerate(tools, start=1):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise DataError("chat.tool_no_name", number=number)
    return tools or None


def visible_parts(text: str, thinking_prompt: bool) -> tuple[str, str]:
    """(reasoning, content) of a reply still being written, unstripped: the reasoning until `</think>`, then the
    answer up to a tool call (and never the start of `<tool_call>` still arriving). The chat and the API's stream
    both read a partial reply through this."""
    if "</think>" in text:
        head, content = text.split("</think>", 1)
        reasoning = head.split("<think>", 1)[-1]
    elif thinking_prompt or text.lstrip().startswith("<think>"):
        reasoning, content = text.split("<think>", 1)[-1], ""
    else:
        reasoning, content = "", text
    content = content.split("<tool_call>", 1)[0]
    for cut in range(min(len(content), len("<tool_call>") - 1), 0, -1):
        if "<tool_call>".startswith(content[-cut:]):
            content = content[:-cut]
            break
    return reasoning, content


def partial_reply(text: str, form: ThinkingFormat | None) -> Reply:
    """A reply still being written, taken apart for showing (see visible_parts). Calls are read once it is whole."""
    if form is None:
        return Reply("", text, [])
    reasoning, content = visible_parts(text, form.opens_thinking())
    return Reply(reasoning.strip(), content.strip(), [])


def read_reply(text: str, form: ThinkingFormat | None, done: bool, count_tokens=None) -> ChatReply:
    """The model's text (markup kept) as a ChatReply; `count_tokens(text)` measures the reasoning."""
    parsed = parse_reply(text, form) if done and form is not None else partial_reply(text, form)
    tokens = count_tokens(parsed.reasoning) if count_tokens and parsed.reasoning else 0
    return ChatReply(parsed.content, parsed.reasoning, parsed.tool_calls, tokens, done, form is not None)


def call_text(call: dict[str, Any], indent: int | None = 1) -> str:
    """A call's arguments as the page shows them: JSON, one argument a line (indent None: on one line)."""
    return json.dumps(call.get("arguments") or {}, ensure_ascii=False, indent=indent)


def reply_entries(reply: ChatReply, turn: int, thinking_title: str, tokens_log: str, call_title) -> list[dict]:
    """A reply as Chatbot messages: a collapsed thought with the reasoning (`tokens_log` names its length), the
    answer, and one entry per call (`call_title(name)`). `turn` keeps the tags of different replies apart."""
    entries: list[dict[str, Any]] = []
    if reply.reasoning:
        entries.append(
            {
                "role": "assistant",
                "content": reply.reasoning,
                "metadata": {"title": thinking_title, "id": f"{REASONING}-{turn}", "log": tokens_log, "status": "done"},
            }
        )
    if reply.content or not (reply.reasoning or reply.tool_calls):
        entries.append({"role": "assistant", "content": reply.content})
    for index, call in enumerate(reply.tool_calls):
        entries.append(
            {
                "role": "assistant",
                "content": f"```json\n{call_text(call)}\n```",
                "metadata": {"title": call_title(call["name"]), "id": f"{CALL}-{turn}-{index}-{call['name']}"},
            }
        )
    return entries


def result_entry(call_name: str, result: str, turn: int, index: int, title: str) -> dict[str, Any]:
    """A tool's result typed by the person: shown on the user's side, read back as a `tool` turn."""
    return {
        "role": "user",
        "content": result,
        "metadata": {"title": title, "id": f"{RESULT}-{turn}-{index}-{call_name}"},
    }


def _text(content: Any) -> str:
    """Gradio hands content back as a list of parts; the first call gets plain strings."""
    if isinstance(content, list):
        return "".join(part if isinstance(part, str) else part.get("text", "") for part in content)
    return str(content or "")


def _images(content: Any) -> list[str]:
    """The image files of a message's parts: gradio's file parts ({"type": "file", "file": {"path"}}) or the
    {"path"} a handler put there."""
    if not isinstance(content, list):
        return []
    found = []
    for part in content:
        if isinstance(part, dict):
            path = (part.get("file") or {}).get("path") if part.get("type") == "file" else part.get("path")
            if path:
                found.append(str(path))
    return found


def _tag(entry: dict[str, Any]) -> tuple[str, list[str]]:
    tag = str((entry.get("metadata") or {}).get("id") or "")
    kind, _, rest = tag.partition("-")
    return (kind, rest.split("-", 2)) if kind in (REASONING, CALL, RESULT) else ("", [])


def _call_from(entry: dict[str, Any], name: str) -> dict[str, Any]:
    text = _text(entry.get("content")).strip().removeprefix("```json").removesuffix("```").strip()
    try:
        arguments = json.loads(text) if text else {}
    except json.JSONDecodeError:
        arguments = {}
    return {"name": name, "arguments": arguments if isinstance(arguments, dict) else {}}


def conversation(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's messages as the template's turns: an assistant's thought, answer and calls joined into one turn
    (reasoning, content, tool_calls), results as `tool` turns, everything else by its role with plain text."""
    turns: list[dict[str, Any]] = []
    for entry in history or []:
        kind, parts = _tag(entry)
        text = _text(entry.get("content"))
        if entry.get("role") == "assistant":
            if not turns or turns[-1]["role"] != "assistant" or (turns[-1].get("tool_calls") and kind != CALL):
                turns.append({"role": "assistant", "content": ""})
            turn = turns[-1]
            if kind == REASONING:
                turn["reasoning"] = text
            elif kind == CALL and len(parts) == 3:
                turn.setdefault("tool_calls", []).append(_call_from(entry, parts[2]))
            else:
                turn["content"] = (turn["content"] + "\n" + text).strip()
        elif kind == RESULT:
            turns.append({"role": "tool", "content": text})
        else:
            turns.append({"role": str(entry.get("role") or "user"), "content": text})
            images = _images(entry.get("content"))
            if images:
                turns[-1]["images"] = images
    return turns


def pending_calls(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of the latest answer that have no result yet, in order: each {"name", "arguments", "turn",
    "index"} (the page asks for their results one by one)."""
    calls: list[dict[str, Any]] = []
    answered: set[tuple[str, str]] = set()
    for entry in history or []:
        kind, parts = _tag(entry)
        if kind == CALL and len(parts) == 3:
            if not calls or calls[-1]["turn"] != parts[0]:
                calls, answered = [], set()
            calls.append({**_call_from(entry, parts[2]), "turn": parts[0], "index": parts[1]})
        elif kind == RESULT and len(parts) == 3:
            answered.add((parts[0], parts[1]))
        elif entry.get("role") == "user":
            calls = []
    return [call for call in calls if (call["turn"], call["index"]) not in answered]


def reply_markup(reply: ChatReply | dict[str, Any], form: ThinkingFormat | None) -> str:
    """A reply as the template writes an assistant turn (without its role token): `<think>…</think>`, the answer and
    the calls in the model's own markup. Feedback stores answers so: read back by any GLM-4.5-generation template,
    the reasoning and calls are what DPO/ORPO/KTO train on (glm45.split_reasoning takes the think block apart; the
    calls' markup is the same text the template would write)."""
    message = reply.as_message() if isinstance(reply, ChatReply) else reply
    content = message.get("content") or ""
    if form is None:
        return content
    nl = form.newline
    reasoning = message.get("reasoning") or ""
    think = f"<think>{reasoning.strip()}</think>{nl}" if reasoning else ""
    calls = "".join(form.tool_call(call) for call in message.get("tool_calls") or ())
    return (think + content.strip() + calls).strip()


def answer_only(text: str) -> str:
    """A reply without its reasoning (its calls' markup kept): what ROUGE, BLEU and the arena judge."""
    text = text or ""
    return text.split("</think>", 1)[1].strip() if "</think>" in text else text


def reasoning_of(text: str) -> str:
    """The reasoning of a reply kept in markup ("" when it has none)."""
    text = text or ""
    return text.split("</think>", 1)[0].split("<think>", 1)[-1].strip() if "</think>" in text else ""


def reply_from_markup(text: str) -> ChatReply:
    """A reply kept in markup (reply_markup: feedback, the arena, predictions) taken apart again."""
    if "</think>" not in text and "<tool_call>" not in text:
        return ChatReply(text, done=True)
    return read_reply(text, GLM45, done=True)

"""Dataset formats -> one internal conversation form.

Every supported format (alpaca, sharegpt, OpenAI messages, AdvertiseGen, ChatGLM prompt/response) becomes a
`Conversation`: an optional system prompt and alternating user/assistant messages ending with the assistant.
Rows that cannot be converted are reported one by one (row number, what is wrong) instead of failing the file.

Pairwise (preference) formats become the same form: the chosen answer is the last assistant message and the
rejected one rides along in `rejected`, so previews, token counts and the SFT path read them unchanged (SFT on a
pairwise file learns the chosen answers). LLaMA-Factory's ranking files (alpaca and sharegpt with `chosen` /
`rejected`), OpenAI-style messages with `chosen` / `rejected` assistant messages, and TRL's prompt / chosen /
rejected are read. A `kto_tag` column (LLaMA-Factory's KTO format) marks an answer desirable or not (`label`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError, UnknownColumnsError
from core.i18n import Message, message


@dataclass
class Conversation:
    """Messages are {"role", "content"} dicts; roles user, assistant and tool. An assistant message may also
    carry "reasoning" (its thinking, OpenAI's `reasoning_content`) and "tool_calls" ([{"name", "arguments": dict}]);
    only templates of the GLM-4.5 generation can express those and `tools` (core/data/glm45.py)."""

    messages: list[dict[str, Any]]
    system: str = ""
    rejected: str | None = None  # pairwise rows: the rejected answer (the chosen one is the last message)
    label: bool | None = None  # kto_tag rows: whether the last answer is desirable
    tools: list[dict[str, Any]] | None = None  # the functions the model may call (OpenAI's `tools`)
    # Image rows: the images in order, as the row names them (path or data: URI); each sits where an `<image>`
    # placeholder is in a user message's text. None: a text-only row (no `images` column, no image parts).
    images: list[str] | None = None

    @property
    def is_pair(self) -> bool:
        return self.rejected is not None


def conversation_row(conversation: Conversation, folder: Path | None = None) -> dict[str, Any]:
    """The conversation as an OpenAI `messages` row that convert_row reads back as the same conversation: the
    system prompt first, reasoning and tool calls on their answers, `tools` and `images` beside (a relative image
    path made absolute from `folder`, the data file's folder, so the row reads the same from anywhere)."""
    system = [{"role": "system", "content": conversation.system}] if conversation.system else []
    row: dict[str, Any] = {"messages": system + [dict(m) for m in conversation.messages]}
    if conversation.tools:
        row["tools"] = conversation.tools
    if conversation.images is not None:
        row["images"] = [
            str(folder / image) if folder and "://" not in image and not image.startswith("data:") else image
            for image in conversation.images
        ]
    return row


@dataclass(frozen=True)
class RowProblem:
    """Why one row (or, after tokenizing, one sample) was skipped; `row` counts from 1."""

    row: int
    problem: Message
    unit: str = "row"  # "row" of the file, or "sample" once tokenized

    def as_message(self) -> Message:
        return message(f"where.{self.unit}", row=self.row, message=self.problem)

    def render(self, lang: str | None = None) -> str:
        return self.as_message().render(lang)

    def __str__(self) -> str:
        return self.render("en")


@dataclass
class ConversionResult:
    format: str
    conversations: list[Conversation]
    problems: list[RowProblem] = field(default_factory=list)  # one for each skipped row


class RowError(Exception):
    """One row cannot be converted; carries the message that says why."""

    def __init__(self, code: str, **params: object):
        self.message = message(code, **params)
        super().__init__(str(self.message))


# Which keys identify which format; the first format whose required keys are all present wins.
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "openai_pairwise": ("messages", "chosen", "rejected"),
    "sharegpt_pairwise": ("conversations", "chosen", "rejected"),
    "alpaca_pairwise": ("instruction", "chosen", "rejected"),
    "trl_pairwise": ("prompt", "chosen", "rejected"),
    "openai": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "chatglm": ("prompt", "response"),
    "advertisegen": ("content", "summary"),
}
FORMATS = tuple(FORMAT_KEYS)
PAIRWISE_FORMATS = tuple(name for name in FORMATS if name.endswith("_pairwise"))

# Every column name a format reads: what a column mapping may rename a file's own columns to.
STANDARD_COLUMNS = (
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "conversations",
    "messages",
    "content",
    "summary",
    "prompt",
    "response",
    "chosen",
    "rejected",
    "kto_tag",
    "reasoning",
    "tools",
    "images",
)
IMAGE_PLACEHOLDER = "<image>"  # LLaMA-Factory's: where an image sits in a message's text
REMOTE_SCHEMES = ("http://", "https://")


def parse_columns(text: str) -> dict[str, str]:
    """'question=instruction, answer=output' -> {'question': 'instruction', 'answer': 'output'}: the file's own
    column names mapped onto a format's, for files whose columns are named differently."""
    mapping: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in (text or "").replace("，", ",").split(","))):
        source, sep, target = (item.strip() for item in pair.partition("="))
        if not sep or not source or not target:
            raise DataError("columns.syntax", pair=pair)
        if target not in STANDARD_COLUMNS:
            raise DataError("columns.unknown_target", pair=pair, target=target, columns=", ".join(STANDARD_COLUMNS))
        if target in mapping.values():
            raise DataError("columns.duplicate_target", pair=pair, target=target)
        mapping[source] = target
    return mapping


def rename_columns(rows: list[dict[str, Any]], mapping: dict[str, str]) -> list[dict[str, Any]]:
    """Rows with the mapped columns renamed. A mapped column replaces one already called that; a row without the
    mapped column keeps its own (so a mapping left filled in does not break files with standard names)."""
    if not mapping:
        return rows
    return [rename_row(row, mapping) for row in rows]


def rename_row(row: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """One row with the mapped columns renamed (see rename_columns)."""
    if not mapping:
        return row
    replaced = {mapping[key] for key in row if key in mapping}
    return {mapping.get(key, key): value for key, value in row.items() if key in mapping or key not in replaced}


SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
    # LLaMA-Factory's tool rows: the assistant's call (JSON {"name", "arguments"}, or a list of them) and the result
    "function_call": "function_call",
    "observation": "tool",
    "tool": "tool",
}


def detect_format(rows: list[dict[str, Any]]) -> str:
    """Name the format of the rows from the first row's keys, or raise DataError listing what was found."""
    keys = set(rows[0])
    for name, required in FORMAT_KEYS.items():
        if all(key in keys for key in required):
            return name
    expected = "; ".join(f"{name}: {', '.join(req)}" for name, req in FORMAT_KEYS.items())
    found = ", ".join(sorted(map(str, keys))) or "(none)"
    raise UnknownColumnsError("data.unknown_columns", row=1, found=found, expected=expected)


def convert(
    rows: list[dict[str, Any]], fmt: str = "auto", inspect: Callable[[Conversation], None] | None = None
) -> ConversionResult:
    """Convert rows of one format to conversations, collecting per-row problems. `inspect` checks what the rows
    only name (core/data/images.py opens each row's images) and raises RowError for a row it refuses."""
    fmt = resolve_format(rows, fmt)
    converter = CONVERTERS[fmt]
    result = ConversionResult(format=fmt, conversations=[])
    for index, row in enumerate(rows, start=1):
        try:
            conversation = _check(converter(row))
            if inspect is not None:
                inspect(conversation)
            conversation.label = _kto_tag(row)
            result.conversations.append(conversation)
        except RowError as exc:
            result.problems.append(RowProblem(index, exc.message))
    if not result.conversations:
        raise DataError(
            "data.no_usable_rows", format=fmt, rejected=len(result.problems), first=result.problems[0].as_message()
        )
    return result


def resolve_format(rows: list[dict[str, Any]], fmt: str = "auto") -> str:
    """The format to convert with: detected from the first row for "auto", else checked by name."""
    if fmt == "auto":
        fmt = detect_format(rows)
    if fmt not in CONVERTERS:
        raise DataError("data.unknown_format", format=fmt, formats=", ".join(FORMATS))
    return fmt


def convert_row(row: dict[str, Any], fmt: str, inspect: Callable[[Conversation], None] | None = None) -> Conversation:
    """One row of a known format as a checked conversation; RowError says why it cannot be one."""
    conversation = _check(CONVERTERS[fmt](row))
    if inspect is not None:
        inspect(conversation)
    return conversation


def _text(row: dict[str, Any], key: str, required: bool = True) -> str:
    if key not in row:
        if required:
            raise RowError("row.missing_field", field=key)
        return ""
    value = row[key]
    if value is None:
        if required:
            raise RowError("row.null_field", field=key)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError("row.field_not_text", field=key, got=type(value).__name__)
    return str(value)


def _pairs(row: dict[str, Any], key: str) -> list[dict[str, str]]:
    """ChatGLM / alpaca `history`: [[question, answer], ...] -> messages."""
    history = row.get(key) or []
    if not isinstance(history, list):
        raise RowError("row.history_not_list", field=key)
    messages = []
    for turn in history:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise RowError("row.history_not_pairs", field=key)
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    return messages


def _alpaca(row: dict[str, Any]) -> Conversation:
    prompt = _text(row, "instruction")
    extra = _text(row, "input", required=False)
    if extra:
        prompt = f"{prompt}\n{extra}" if prompt else extra
    answer: dict[str, Any] = {"role": "assistant", "content": _text(row, "output")}
    reasoning = _text(row, "reasoning", required=False)
    if reasoning:
        answer["reasoning"] = reasoning  # a reasoning column (mapped in Column mapping): the answer's thinking
    messages = _pairs(row, "history") + [{"role": "user", "content": prompt}, answer]
    return Conversation(messages, _text(row, "system", required=False), tools=_tools(row), images=_images(row))


def _chatglm(row: dict[str, Any]) -> Conversation:
    messages = _pairs(row, "history") + [
        {"role": "user", "content": _text(row, "prompt")},
        {"role": "assistant", "content": _text(row, "response")},
    ]
    return Conversation(messages, _text(row, "system", required=False))


def _advertisegen(row: dict[str, Any]) -> Conversation:
    return Conversation(
        [{"role": "user", "content": _text(row, "content")}, {"role": "assistant", "content": _text(row, "summary")}]
    )


def _json_value(value: Any, number: int, what: str) -> Any:
    """A value that may come as JSON text (csv cells, LLaMA-Factory's `tools` column and tool calls)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RowError("row.not_json", number=number, what=what, detail=exc.msg) from None


def _images(row: dict[str, Any]) -> list[str] | None:
    """LLaMA-Factory's `images` column: a list of paths / data: URIs (one text is one image; csv: JSON text). Its
    `videos` (and `audios`) columns are refused by name: only images are read, and the rest of the file loads."""
    for column in ("videos", "audios"):
        if row.get(column):
            raise RowError("row.media_unsupported", column=column)
    if "images" not in row or row["images"] is None:
        return None
    images = row["images"]
    if isinstance(images, str):
        text = images.strip()
        if text.startswith("["):
            try:
                images = json.loads(text)
            except json.JSONDecodeError:
                raise RowError("row.images_not_list") from None
        else:
            images = [text] if text else []
    if not isinstance(images, list) or not all(isinstance(item, str) and item.strip() for item in images):
        raise RowError("row.images_not_list")
    return images


def _image_reference(part: dict[str, Any], number: int) -> str:
    """An OpenAI `image_url` part ({"image_url": {"url": ...}} or {"image_url": "..."}) or an `image` part."""
    value = part.get("image_url", part.get("image"))
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value.strip():
        raise RowError("row.image_part_no_url", number=number)
    return value


def _content_parts(parts: list[Any], number: int, images: list[str]) -> str:
    """OpenAI content parts -> the message's text, each image part an `<image>` placeholder (its reference
    appended to `images`)."""
    text = ""
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text += part["text"]
        elif kind in ("image_url", "image"):
            images.append(_image_reference(part, number))
            text += IMAGE_PLACEHOLDER
        elif kind in ("video_url", "video", "input_audio", "audio"):
            raise RowError("row.media_unsupported", column=f"messages[{number}] {kind}")
        else:
            raise RowError("row.content_part_unknown", number=number, got=repr(kind))
    return text


def _tools(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The row's `tools` (OpenAI's [{"type": "function", "function": {...}}] or plain function objects)."""
    tools = row.get("tools")
    if isinstance(tools, str) and tools.strip():
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise RowError("row.tools_not_list") from None
    if tools in (None, "", []):
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) and _tool_name(t) for t in tools):
        raise RowError("row.tools_not_list")
    return tools


def _tool_name(tool: dict[str, Any]) -> str:
    function = tool.get("function", tool)
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else ""


def _tool_calls(value: Any, number: int) -> list[dict[str, Any]]:
    """OpenAI `tool_calls` (or LLaMA-Factory's function_call value) -> [{"name", "arguments": dict}]."""
    calls = _json_value(value, number, "tool_calls")
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or not calls:
        raise RowError("row.tool_calls_not_list", number=number)
    found = []
    for call in calls:
        function = call.get("function", call) if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise RowError("row.tool_call_no_name", number=number)
        arguments = function.get("arguments")
        if arguments in (None, ""):
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise RowError("row.tool_call_arguments", number=number, name=name, detail=exc.msg) from None
        if not isinstance(arguments, dict):
            raise RowError(
                "row.tool_call_arguments", number=number, name=name, detail=f"a JSON {type(arguments).__name__}"
            )
        found.append({"name": name, "arguments": arguments})
    return found


def _message_list(
    row: dict[str, Any], key: str, role_key: str, content_key: str, roles: dict[str, str] | None
) -> Conversation:
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise RowError("row.messages_not_list", field=key)
    system = _text(row, "system", required=False)
    messages: list[dict[str, Any]] = []
    images = _images(row)
    part_images: list[str] = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise RowError("row.message_not_object", number=number, role_key=role_key, content_key=content_key)
        raw_role = turn.get(role_key)
        role = roles.get(str(raw_role).lower()) if roles else raw_role
        if role not in ("system", "user", "assistant", "tool", "function_call"):
            raise RowError("row.message_unknown_role", number=number, role_key=role_key, role=repr(raw_role))
        content = turn.get(content_key)
        if role == "function_call":  # sharegpt: the call is the message's value
            messages.append({"role": "assistant", "content": "", "tool_calls": _tool_calls(content, number)})
            continue
        calls = turn.get("tool_calls") if role == "assistant" else None
        if role == "tool" and isinstance(content, (dict, list)):
            content = json.dumps(content, ensure_ascii=False)  # a result given as JSON: the text the model reads
        if content is None and calls:
            content = ""  # OpenAI: an assistant message that only calls tools has null content
        if isinstance(content, list) and role in ("user", "assistant", "system"):
            content = _content_parts(content, number, part_images)
        if not isinstance(content, str):
            raise RowError(
                "row.message_content_not_text", number=number, content_key=content_key, got=type(content).__name__
            )
        if role == "system":
            if messages:
                raise RowError("row.system_not_first", number=number)
            system = content
            continue
        message: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            reasoning = turn.get("reasoning_content", turn.get("reasoning"))
            if reasoning is not None:
                if not isinstance(reasoning, str):
                    raise RowError("row.reasoning_not_text", number=number, got=type(reasoning).__name__)
                message["reasoning"] = reasoning
            if calls:
                message["tool_calls"] = _tool_calls(calls, number)
        messages.append(message)
    if part_images:
        images = (images or []) + part_images
    return Conversation(messages, system, tools=_tools(row), images=images)


def _kto_tag(row: dict[str, Any]) -> bool | None:
    """LLaMA-Factory's KTO column: true for a desirable answer, false for an undesirable one (CSV: the words)."""
    value = row.get("kto_tag")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise RowError("row.kto_tag_not_bool", got=repr(value))
    return value


ANSWER_ROLES = ("assistant", "gpt", "model", "chatgpt", "bing", "bard")


def _answer(row: dict[str, Any], key: str) -> str:
    """One side of a pair: a string, an assistant message ({role, content} or sharegpt's {from, value}), or a
    list holding one such message (TRL's conversational form)."""
    if key not in row or row[key] is None:
        raise RowError("row.missing_field", field=key)
    value = row[key]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        role = value.get("role", value.get("from"))
        content = value.get("content", value.get("value"))
        if str(role).lower() not in ANSWER_ROLES:
            raise RowError("row.pair_not_assistant", field=key, role=repr(role))
        if not isinstance(content, str):
            raise RowError("row.field_not_text", field=key, got=type(content).__name__)
        return content
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError("row.field_not_text", field=key, got=type(value).__name__)
    return str(value)


def _with_pair(conversation: Conversation, row: dict[str, Any]) -> Conversation:
    """A prompt (messages ending with the user) plus the row's chosen and rejected answers."""
    if conversation.messages and conversation.messages[-1]["role"] == "assistant":
        raise RowError("row.pair_prompt_ends_with_answer")
    conversation.messages.append({"role": "assistant", "content": _answer(row, "chosen")})
    conversation.rejected = _answer(row, "rejected")
    return conversation


def _alpaca_pairwise(row: dict[str, Any]) -> Conversation:
    prompt = _text(row, "instruction")
    extra = _text(row, "input", required=False)
    if extra:
        prompt = f"{prompt}\n{extra}" if prompt else extra
    messages = _pairs(row, "history") + [{"role": "user", "content": prompt}]
    # `tools`: the functions the prompt offered (the chat's feedback keeps them, with the answers' calls as markup)
    return _with_pair(Conversation(messages, _text(row, "system", required=False), tools=_tools(row)), row)


def _trl_pairwise(row: dict[str, Any]) -> Conversation:
    """TRL's preference rows: `prompt` is a string or a list of messages."""
    if isinstance(row.get("prompt"), list):
        return _with_pair(_message_list(row, "prompt", "role", "content", None), row)
    return _with_pair(Conversation([{"role": "user", "content": _text(row, "prompt")}]), row)


# Which role may follow which: a user turn is answered; an answer that calls tools is followed by their results,
# and results by more results or the next answer; an answer without calls is followed by the next question.
def _expected_after(previous: dict[str, Any] | None) -> tuple[str, ...]:
    if previous is None:
        return ("user",)
    if previous["role"] == "user":
        return ("assistant",)
    if previous["role"] == "tool":
        return ("tool", "assistant")
    return ("tool",) if previous.get("tool_calls") else ("user",)


def _check_images(conversation: Conversation) -> None:
    """An image row: one image per `<image>` placeholder, placeholders in user turns only (the GLM-V templates
    show images there), no image the workbench would have to fetch from the network."""
    if conversation.images is None:
        return
    placed = 0
    for number, turn in enumerate(conversation.messages, start=1):
        count = turn["content"].count(IMAGE_PLACEHOLDER)
        if count and turn["role"] != "user":
            raise RowError("row.image_not_user", number=number, role=turn["role"])
        placed += count
    if IMAGE_PLACEHOLDER in conversation.system:
        raise RowError("row.image_in_system")
    if placed != len(conversation.images):
        raise RowError("row.image_count_mismatch", placeholders=placed, images=len(conversation.images))
    for number, reference in enumerate(conversation.images, start=1):
        if reference.strip().lower().startswith(REMOTE_SCHEMES):
            raise RowError("row.image_remote", number=number, image=reference)


def _check(conversation: Conversation) -> Conversation:
    """Conversations start with the user, alternate user/assistant (with tool results after an answer that calls
    tools) and end with the assistant; a call names a tool the row lists, when it lists any."""
    messages = conversation.messages
    if not messages:
        raise RowError("row.no_messages")
    _check_images(conversation)
    names = {_tool_name(tool) for tool in conversation.tools or ()}
    previous = None
    for number, turn in enumerate(messages, start=1):
        expected = _expected_after(previous)
        if turn["role"] not in expected:
            if turn["role"] == "tool":
                raise RowError("row.tool_without_call", number=number)
            raise RowError("row.wrong_order", number=number, expected=" / ".join(expected), got=turn["role"])
        for call in turn.get("tool_calls") or ():
            if names and call["name"] not in names:
                raise RowError("row.tool_unknown", number=number, name=call["name"], tools=", ".join(sorted(names)))
        previous = turn
    last = messages[-1]
    if last["role"] != "assistant":
        raise RowError("row.ends_with_user")
    if not last["content"].strip() and not last.get("tool_calls"):
        raise RowError("row.empty_answer")
    if conversation.rejected is not None:
        if not conversation.rejected.strip():
            raise RowError("row.pair_empty_rejected")
        if conversation.rejected.strip() == last["content"].strip():
            raise RowError("row.pair_identical")
    return conversation


CONVERTERS: dict[str, Callable[[dict[str, Any]], Conversation]] = {
    "openai_pairwise": lambda row: _with_pair(_message_list(row, "messages", "role", "content", None), row),
    "sharegpt_pairwise": lambda row: _with_pair(
        _message_list(row, "conversations", "from", "value", SHAREGPT_ROLES), row
    ),
    "alpaca_pairwise": _alpaca_pairwise,
    "trl_pairwise": _trl_pairwise,
    "openai": lambda row: _message_list(row, "messages", "role", "content", None),
    "sharegpt": lambda row: _message_list(row, "conversations", "from", "value", SHAREGPT_ROLES),
    "alpaca": _alpaca,
    "chatglm": _chatglm,
    "advertisegen": _advertisegen,
}

"""The chat format of the GLM-4.5 generation (GLM-4.5 / 4.5-Air / 4.6 / 4.7 / 4.7-Flash): reasoning and tool calls.

What the models' own chat_template.jinja renders, and therefore what they were trained on:

    [gMASK]<sop><|system|>\\n# Tools ... <tools>\\n{tool json}\\n...</tools> ...      (when there are tools)
    <|system|>\\n{system}<|user|>\\n{query}[/nothink]
    <|assistant|>\\n<think>{reasoning}</think>\\n{answer}\\n<tool_call>{name}\\n<arg_key>k</arg_key>\\n
    <arg_value>v</arg_value>\\n</tool_call><|observation|>\\n<tool_response>\\n{result}\\n</tool_response>...

- Reasoning is shown only for the assistant turns after the last user turn; earlier turns get an empty think block
  (GLM-4.5/4.6: `<think></think>`). Reasoning comes from `reasoning_content`, or from a `<think>…</think>` inside
  the content, split off exactly as the real template splits it.
- `enable_thinking: false` appends `/nothink` to every user turn and opens the answer with the empty think block,
  which is then part of the prompt (the real template's generation prompt ends with it).
- Argument values that are strings are written as they are, anything else as JSON.
- GLM-4.7 / 4.7-Flash (`GLM47`) write the same parts without the newlines, a bare `</think>` for no reasoning, no
  `/nothink`, and their generation prompt ends with `<think>` (thinking) or `</think>` (off).
- GLM-Z1-0414 (`GLMZ1`, a dense Glm4ForCausalLM) writes GLM-4-0414's layout (`<|assistant|>\\n{answer}`). Its
  template shows every turn as its text after `</think>`, stripped, so no earlier reasoning and no empty think
  block, and its generation prompt ends with `\\n<think>`: the model writes its reasoning, `</think>` and the
  answer. The real template strips the reasoning of the last answer too (it only ever renders history), so the
  turn that trains is the generation prompt followed by what the model writes: `{reasoning}</think>\\n{answer}`.
  `<think>` is plain text in GLM-Z1's tokenizer (14 special tokens, as GLM-4-0414's), which is why the turn is
  split exactly where the prompt ends. Its tools use GLM-4-0414's format, which the workbench does not write: a
  row with tools is a row problem.

This module turns one conversation into *pieces*: (text, carries_loss). Every piece boundary sits next to a special
token (`<|assistant|>`, `</think>`, a role token), and the tokenizer splits its special tokens out before it encodes
any text, so encoding the pieces one by one gives exactly the ids of encoding the rendered string whole (the tests
compare with the real templates, token for token). Loss: the assistant's reasoning, answer and tool calls after the
last user turn; the answer and tool calls of earlier turns (never their empty think block); the role token that ends
an assistant turn (`<|user|>`, `<|observation|>`); never the tools block, a prompt or a tool's result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_OUTRO = (
    "</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n"
    "<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
    "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)
NO_THINK = "/nothink"
# The tokens this format needs in the tokenizer as added tokens (not special: decoding keeps them), beside GLM's
# role tokens.
FORMAT_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "<tool_response>",
    "</tool_response>",
    NO_THINK,
)


@dataclass(frozen=True)
class ThinkingFormat:
    """Where the GLM-4.5-generation templates differ from each other: GLM-4.5/4.6 write newlines between the parts
    and /nothink after a user turn; GLM-4.7/4.7-Flash write everything tight, a bare `</think>` for no reasoning,
    and open the answer with `<think>` in the prompt."""

    newline: str = "\n"  # after a role token, and between the think block, the answer and the calls
    empty_think: str = "<think></think>"  # an assistant turn without (shown) reasoning
    nothink_suffix: bool = True  # thinking off appends /nothink to every user turn
    tools_outro: str = TOOLS_OUTRO
    thinking_prompt: str = ""  # what the generation prompt adds after <|assistant|> when thinking is on
    enabled: bool = True  # enable_thinking: off trains and prompts without reasoning, as the template renders it
    tools: bool = True  # the format lists tools and writes tool calls (GLM-Z1's own tool format is not written)
    visible_turns: bool = False  # user turns written as GLM-Z1 writes them: the text after `</think>`, stripped

    def empty(self) -> str:
        """What an assistant turn without (shown) reasoning starts with."""
        return self.newline + self.empty_think if self.empty_think else ""

    def opens_thinking(self) -> bool:
        """Whether the generation prompt opens the reasoning: the reply starts inside it, without `<think>`."""
        return self.enabled and bool(self.thinking_prompt)

    def generation(self) -> str:
        """What follows <|assistant|> in the generation prompt."""
        return self.thinking_prompt if self.enabled else self.newline + self.empty_think

    def tool_call(self, call: dict[str, Any]) -> str:
        nl = self.newline
        arguments = "".join(
            f"<arg_key>{key}</arg_key>{nl}<arg_value>{argument_text(value)}</arg_value>{nl}"
            for key, value in (call.get("arguments") or {}).items()
        )
        return f"{nl}<tool_call>{call['name']}{nl}{arguments}</tool_call>"

    def tool_response(self, content: str) -> str:
        nl = self.newline
        return f"{nl}<tool_response>{nl}{content}{nl}</tool_response>"


GLM45 = ThinkingFormat()
GLM47 = ThinkingFormat(
    newline="",
    empty_think="</think>",
    nothink_suffix=False,
    tools_outro=(
        "</tools>\n\nFor each function call, output the function name and arguments within the following XML format:"
        "\n<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key><arg_value>{arg-value-1}</arg_value>"
        "<arg_key>{arg-key-2}</arg_key><arg_value>{arg-value-2}</arg_value>...</tool_call>"
    ),
    thinking_prompt="<think>",
)
GLMZ1 = ThinkingFormat(
    empty_think="", nothink_suffix=False, tools_outro="", thinking_prompt="\n<think>", tools=False, visible_turns=True
)


def visible(text: str) -> str:
    """A turn's text as GLM-Z1's template writes it."""
    return text.split("</think>")[-1].strip()


def split_reasoning(message: dict[str, Any]) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message, as the real template reads them: `reasoning` (our name for
    `reasoning_content`) if given, else the part of the content before `</think>`."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning")
    if isinstance(reasoning, str):
        return reasoning, content
    if "</think>" in content:
        before = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
        return before, content.split("</think>")[-1].lstrip("\n")
    return "", content


def argument_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def tools_text(tools: list[dict[str, Any]], form: ThinkingFormat = GLM45) -> str:
    """The system turn that lists the tools (the role token included)."""
    listed = "".join(json.dumps(tool, ensure_ascii=False) + "\n" for tool in tools)
    return "<|system|>\n" + TOOLS_INTRO + listed + form.tools_outro


def pieces(
    messages: list[dict[str, Any]],
    system: str = "",
    tools: list[dict[str, Any]] | None = None,
    form: ThinkingFormat = GLM45,
) -> list[tuple[str, bool]]:
    """The conversation after the `[gMASK]<sop>` prefix as (text, carries_loss) pieces; see the module docstring."""
    nl, thinking = form.newline, form.enabled
    out: list[tuple[str, bool]] = []
    if tools:
        out.append((tools_text(tools, form), False))
    if system:
        out.append(("<|system|>" + nl + system, False))
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    previous = None
    for index, message in enumerate(messages):
        role, content = message["role"], message.get("content") or ""
        ends_answer = previous == "assistant"  # the role token after an answer stops it: the model learns to emit it
        if role == "user":
            suffix = NO_THINK if form.nothink_suffix and not thinking and not content.endswith(NO_THINK) else ""
            content = visible(content) if form.visible_turns else content
            out += [("<|user|>", ends_answer), (nl + content + suffix, False)]
        elif role == "tool":
            if previous != "tool":
                out.append(("<|observation|>", ends_answer))
            out.append((form.tool_response(content), False))
        elif role == "system":
            out += [("<|system|>", ends_answer), (nl + content, False)]
        else:
            reasoning, answer = split_reasoning(message)
            if not thinking:
                reasoning = ""
            latest = index > last_user  # this turn's answers (after the last question) show their reasoning
            think = f"{nl}<think>{reasoning.strip()}</think>" if latest and reasoning else form.empty()
            rest = (nl + answer.strip() if answer.strip() else "") + "".join(
                form.tool_call(call) for call in message.get("tool_calls") or ()
            )
            rest = rest or ("" if think else nl)  # GLM-Z1 writes an empty answer as `<|assistant|>\n`
            out.append(("<|assistant|>", False))
            prompted = form.generation()  # what the generation prompt already holds: never the model's to write
            if latest and (think + rest).startswith(prompted):
                out += [(prompted, False), ((think + rest)[len(prompted) :], True)]
            elif latest:
                out.append((think + rest, True))
            else:
                out += [
                    (think, False),
                    (rest, True),
                ]  # history: its empty think block is the template's, not the model's
        previous = role
    return [(text, trains) for text, trains in out if text]


def generation_prompt(form: ThinkingFormat = GLM45) -> str:
    """What follows the conversation when the model is to answer."""
    return "<|assistant|>" + form.generation()


def jinja(form: ThinkingFormat = GLM45) -> str:
    """The format as a Jinja chat template (for tokenizers we write: the MoE demo model), written from the same
    definition as `pieces`; the tests render it beside `pieces` and the real templates."""
    nl = json.dumps(form.newline)
    intro, outro = json.dumps(TOOLS_INTRO), json.dumps(form.tools_outro)
    empty, prompt_on = json.dumps(form.empty()), json.dumps(form.thinking_prompt)
    prompt_off = json.dumps(dataclasses.replace(form, enabled=False).generation())
    nothink = "true" if form.nothink_suffix else "false"
    user_text = "content.split('</think>')[-1].strip()" if form.visible_turns else "content"
    # Without an empty think block, an assistant turn with nothing to show is still `<|assistant|>` + newline.
    bare_answer = "" if form.empty() else "{%- elif not shown and not m.tool_calls -%}{{- nl -}}"
    tools = (
        "{%- if tools -%}{{- '<|system|>\\n' ~ " + intro + " -}}"
        "{%- for tool in tools -%}{{- tool | tojson(ensure_ascii=False) ~ '\\n' -}}{%- endfor -%}"
        "{{- " + outro + " -}}{%- endif -%}"
        if form.tools
        else ""
    )
    return (
        "{{- '[gMASK]<sop>' -}}"
        "{%- set nl = " + nl + " -%}" + tools + "{%- set ns = namespace(last_user=-1) -%}"
        "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
        "{%- endfor -%}"
        "{%- set thinking = enable_thinking is not defined or enable_thinking -%}"
        "{%- for m in messages -%}"
        "{%- set content = m.content if m.content is string else '' -%}"
        "{%- if m.role == 'user' -%}"
        "{{- '<|user|>' ~ nl ~ " + user_text + " -}}"
        "{%- if "
        + nothink
        + " and not thinking and not content.endswith('/nothink') -%}{{- '/nothink' -}}{%- endif -%}"
        "{%- elif m.role == 'system' -%}{{- '<|system|>' ~ nl ~ content -}}"
        "{%- elif m.role == 'tool' -%}"
        "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|observation|>' -}}{%- endif -%}"
        "{{- nl ~ '<tool_response>' ~ nl ~ content ~ nl ~ '</tool_response>' -}}"
        "{%- elif m.role == 'assistant' -%}"
        "{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' -%}"
        "{%- if m.reasoning_content is not string and '</think>' in content -%}"
        "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
        "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
        "{%- endif -%}"
        "{{- '<|assistant|>' -}}"
        "{%- set shown = thinking and loop.index0 > ns.last_user and reasoning -%}"
        "{%- if shown -%}{{- nl ~ '<think>' ~ reasoning.strip() ~ '</think>' -}}"
        "{%- else -%}{{- " + empty + " -}}{%- endif -%}"
        "{%- if content.strip() -%}{{- nl ~ content.strip() -}}" + bare_answer + "{%- endif -%}"
        "{%- for call in m.tool_calls or [] -%}"
        "{%- set call = call.function if call.function is defined else call -%}"
        "{{- nl ~ '<tool_call>' ~ call.name ~ nl -}}"
        "{%- for key, value in (call.arguments or {}).items() -%}"
        "{{- '<arg_key>' ~ key ~ '</arg_key>' ~ nl ~ '<arg_value>' -}}"
        "{{- value if value is string else value | tojson(ensure_ascii=False) -}}"
        "{{- '</arg_value>' ~ nl -}}"
        "{%- endfor -%}"
        "{{- '</tool_call>' -}}"
        "{%- endfor -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}"
        "{%- if thinking -%}{{- " + prompt_on + " -}}{%- else -%}{{- " + prompt_off + " -}}{%- endif -%}{%- endif -%}"
    )


@dataclass
class Reply:
    """A generated answer taken apart: its reasoning, the text for the user and the tool calls (OpenAI's shapes)."""

    reasoning: str
    content: str
    tool_calls: list[dict[str, Any]]


def parse_reply(text: str, form: ThinkingFormat = GLM45) -> Reply:
    """What the model wrote after `<|assistant|>` (special tokens kept, the stop token removed) as a Reply: the
    reasoning from `<think>…</think>` (for GLM-4.7 the generation prompt's `<think>` is not in `text`: everything
    before `</think>` is reasoning), each `<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>`
    as {"name", "arguments"} (a value that reads as JSON is that JSON, else the text), the rest as content. Markup
    that does not close is left in the content as text: a reply that cannot be parsed is still shown."""
    reasoning, rest = "", text
    if "</think>" in rest:
        head, rest = rest.split("</think>", 1)
        if form.opens_thinking() or "<think>" in head:
            reasoning = head.split("<think>", 1)[-1].strip()
        else:
            rest = head + "</think>" + rest
    calls: list[dict[str, Any]] = []
    content = rest
    start = rest.find("<tool_call>")
    if start >= 0:
        content, tail = rest[:start], rest[start:]
        while tail.startswith("<tool_call>") and "</tool_call>" in tail:
            body, tail = tail[len("<tool_call>") :].split("</tool_call>", 1)
            call = _parse_call(body)
            if call is None:
                content += "<tool_call>" + body + "</tool_call>"
            else:
                calls.append(call)
            tail = tail.lstrip("\n")
        content += tail
    return Reply(reasoning, content.strip(), calls)


def _parse_call(body: str) -> dict[str, Any] | None:
    """`name<arg_key>k</arg_key><arg_value>v</arg_value>…` (newlines between the parts allowed) -> the call."""
    name, _, arguments_text = body.partition("<arg_key>")
    name = name.strip()
    if not name or "<" in name:
        return None
    arguments: dict[str, Any] = {}
    rest = "<arg_key>" + arguments_text if arguments_text else ""
    while rest.strip():
        rest = rest.strip()
        if not rest.startswith("<arg_key>") or "</arg_key>" not in rest:
            return None
        key, rest = rest[len("<arg_key>") :].split("</arg_key>", 1)
        rest = rest.lstrip("\n")
        if not rest.startswith("<arg_value>") or "</arg_value>" not in rest:
            return None
        value, rest = rest[len("<arg_value>") :].split("</arg_value>", 1)
        try:
            arguments[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key.strip()] = value
    return {"name": name, "arguments": arguments}

"""Chat templates: a conversation -> token ids plus labels in which only the assistant's replies carry loss.

We build ids segment by segment (role token, then text) instead of rendering a string and tokenizing it, so
the loss mask is exact by construction. Text pieces are encoded separately, as THUDM's own code does: for
SentencePiece tokenizers (ChatGLM-6B, ChatGLM2/3) that matters, since every encode call adds the dummy prefix '▁'.

- glm4:     [gMASK]<sop><|system|>\n{system}<|user|>\n{query}<|assistant|>\n{answer}<|user|>\n...
            An answer is followed by the next `<|user|>` (or `<|endoftext|>` at the end); that token carries
            loss too, so the model learns to stop: both are in the generation stop list.
- chatglm3: the same role tokens after `[gMASK] sop`; the model writes the "\n" after `<|assistant|>` itself.
- chatglm2: plain text rounds, `[Round 1]\n\n问：{query}\n\n答：{answer}\n\n[Round 2]...`; as in THUDM's
            P-tuning code, the history is prompt and only the last answer (plus `</s>`) carries loss.
- chatglm:  ChatGLM-6B (v1), as THUDM's `chat()` and P-tuning code (ptuning/main.py) build it: the bare question
            on the first turn, with history rounds counted from 0 (`[Round 0]\n问：{q}\n答：{a}\n[Round 1]\n问：
            {query}\n答：`), then `[gMASK] <sop>` at the END of the prompt and `<eop>` after the answer. Loss on
            `<sop>`, the answer and `<eop>` (THUDM's labels start at `<sop>`); generation stops at `<eop>`, and
            the decoded answer goes through THUDM's `process_response`. A system prompt is text in front of
            the rounds, ended by a newline (THUDM's `--source_prefix` is the nearest thing the model knew).

`chat_template_jinja` writes every template as the Jinja saved with the tokenizers we write; tests check that
the two render the same ids.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from core.data import glm45
from core.data.formats import Conversation, RowError
from core.errors import ModelError, config_error

IGNORE_INDEX = -100

_FULL_WIDTH = [(",", "，"), ("!", "！"), (":", "："), (";", "；"), (r"\?", "？")]


def thudm_v1_response(response: str) -> str:
    """THUDM's ChatGLM-6B `process_response`: stripped, "[[训练时间]]" -> "2023年", and ASCII , ! : ; ? next to a
    Chinese character turned into their full-width forms."""
    response = response.strip().replace("[[训练时间]]", "2023年")
    for ascii_mark, full_width in _FULL_WIDTH:
        response = re.sub(rf"([\u4e00-\u9fff]){ascii_mark}", rf"\g<1>{full_width}", response)
        response = re.sub(rf"{ascii_mark}([\u4e00-\u9fff])", rf"{full_width}\g<1>", response)
    return response


@dataclass(frozen=True)
class Rounds:
    """Plain-text rounds (ChatGLM-6B, ChatGLM2-6B): the history is prompt text; only the last answer carries loss,
    as in THUDM's P-tuning code. `query` has the fields {number} and {query}; `answer_end` follows every earlier
    answer (and a system prompt)."""

    first: int
    query: str
    answer_end: str
    bare_single_turn: bool = False  # ChatGLM-6B: a lone question is the bare question, without a round header

    def text(self, messages: list[dict[str, str]], system: str = "") -> str:
        """The prompt text for a history ending with a user turn."""
        text = f"{system}{self.answer_end}" if system else ""
        if self.bare_single_turn and len(messages) == 1:
            return text + messages[0]["content"]
        for number, index in enumerate(range(0, len(messages), 2), start=self.first):
            text += self.query.format(number=number, query=messages[index]["content"])
            if index + 1 < len(messages):
                text += messages[index + 1]["content"] + self.answer_end
        return text


@dataclass(frozen=True)
class Template:
    name: str
    prefix: tuple[str, ...]
    stop_tokens: tuple[str, ...] = ("<|endoftext|>", "<|user|>", "<|observation|>")
    end_token: str = "<|endoftext|>"
    prompt_newline: bool = True  # the generation prompt ends with "<|assistant|>\n" (else the model writes it)
    rounds: Rounds | None = None  # plain text rounds instead of role tokens
    # How a rendered string joins role token and text, so that tokenizing it whole gives the ids that encoding
    # segment by segment gives: SentencePiece (chatglm3) writes the dummy prefix of each text as a space.
    text_joiner: str = "\n"
    # ChatGLM-6B puts its special tokens after the prompt: `prompt_suffix` (no loss), then `answer_prefix`, which
    # starts the answer and carries loss.
    prompt_suffix: tuple[str, ...] = ()
    answer_prefix: tuple[str, ...] = ()
    answer_cleanup: Callable[[str], str] | None = None  # the model's own post-processing of a decoded answer
    # The GLM-4.5 generation's reasoning and tool calls (core/data/glm45.py); None: a template without them
    thinking: glm45.ThinkingFormat | None = None

    def role_token(self, role: str) -> str:
        return f"<|{role}|>"

    def clean_answer(self, text: str) -> str:
        """A decoded answer as the model's own chat code returns it."""
        return self.answer_cleanup(text) if self.answer_cleanup is not None else text.strip()


TEMPLATES: dict[str, Template] = {
    "glm4": Template("glm4", prefix=("[gMASK]", "<sop>")),
    # GLM-4.5 / 4.5-Air / 4.6 (Glm4MoeForCausalLM): the model writes "\n<think>" after <|assistant|> itself.
    "glm4_moe": Template("glm4_moe", prefix=("[gMASK]", "<sop>"), prompt_newline=False, thinking=glm45.GLM45),
    # GLM-4.7 / 4.7-Flash (Glm4MoeLiteForCausalLM) / GLM-5: the same parts written tight, `<think>` in the prompt.
    "glm47": Template("glm47", prefix=("[gMASK]", "<sop>"), prompt_newline=False, thinking=glm45.GLM47),
    # GLM-Z1-0414 (Glm4ForCausalLM): glm4's layout, earlier reasoning dropped, `\n<think>` opening the answer.
    "glmz1": Template("glmz1", prefix=("[gMASK]", "<sop>"), prompt_newline=False, thinking=glm45.GLMZ1),
    "chatglm3": Template(
        "chatglm3",
        prefix=("[gMASK]", "sop"),
        stop_tokens=("</s>", "<|user|>", "<|observation|>"),
        end_token="</s>",
        prompt_newline=False,
        text_joiner="\n ",
    ),
    "chatglm2": Template(
        "chatglm2",
        prefix=("[gMASK]", "sop"),
        stop_tokens=("</s>",),
        end_token="</s>",
        rounds=Rounds(first=1, query="[Round {number}]\n\n问：{query}\n\n答：", answer_end="\n\n"),
    ),
    "chatglm": Template(
        "chatglm",
        prefix=(),
        stop_tokens=("<eop>",),
        end_token="<eop>",
        rounds=Rounds(first=0, query="[Round {number}]\n问：{query}\n答：", answer_end="\n", bare_single_turn=True),
        prompt_suffix=("[gMASK]",),
        answer_prefix=("<sop>",),
        answer_cleanup=thudm_v1_response,
    ),
}
AUTO = "auto"


NO_THINKING = "/nothink"  # a template name with this suffix: the same template with enable_thinking off


def get_template(name: str) -> Template:
    base = TEMPLATES.get(name.removesuffix(NO_THINKING))
    if name.endswith(NO_THINKING) and base is not None and base.thinking is not None:
        return dataclasses.replace(base, name=name, thinking=dataclasses.replace(base.thinking, enabled=False))
    if name not in TEMPLATES:
        raise config_error(
            "template", "config.auto_or_one_of", value=name, show_value=True, choices=", ".join(TEMPLATES)
        )
    return TEMPLATES[name]


def _literal(text: str) -> str:
    """A Jinja string literal (newlines escaped: transformers renders with trim_blocks, which eats raw ones)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _expression(pattern: str, fields: dict[str, str]) -> str:
    """A str.format pattern as a Jinja expression, each {field} replaced by the Jinja expression given for it."""
    parts = []
    for text, field, _, _ in string.Formatter().parse(pattern):
        if text:
            parts.append(_literal(text))
        if field is not None:
            parts.append(f"({fields[field]})|string")
    return " ~ ".join(parts) or "''"


def _rounds_jinja(template: Template) -> str:
    rounds = template.rounds
    query = _expression(rounds.query, {"number": "ns.number", "query": "m['content']"})
    single = "ns.users == 1" if rounds.bare_single_turn else "false"
    generation = "".join(template.prompt_suffix + template.answer_prefix)
    return (
        "{%- set ns = namespace(users=0, seen=0, number=" + str(rounds.first) + ") -%}"
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.users = ns.users + 1 -%}{%- endif -%}"
        "{%- endfor -%}"
        "{{- " + _literal("".join(template.prefix)) + " -}}"
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'system' -%}{{- m['content'] ~ " + _literal(rounds.answer_end) + " -}}"
        "{%- elif m['role'] == 'user' -%}"
        "{%- set ns.seen = ns.seen + 1 -%}"
        "{%- if " + single + " -%}{{- m['content'] -}}{%- else -%}{{- " + query + " -}}{%- endif -%}"
        "{%- set ns.number = ns.number + 1 -%}"
        "{%- if ns.seen == ns.users -%}{{- " + _literal(generation) + " -}}{%- endif -%}"
        "{%- elif m['role'] == 'assistant' -%}"
        "{%- if ns.seen == ns.users -%}{{- m['content'] ~ " + _literal(template.end_token) + " -}}"
        "{%- else -%}{{- m['content'] ~ " + _literal(rounds.answer_end) + " -}}{%- endif -%}"
        "{%- else -%}{{- raise_exception('the " + template.name + " template has no ' ~ m['role'] ~ "
        "' role: only system, user and assistant') -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def chat_template_jinja(name: str) -> str:
    """The template as Jinja, saved with tokenizers we write (the demo model, converted checkpoints) for users of
    `apply_chat_template`. Generated from the one `Template` definition; tests check the two agree token for
    token. A rounds template renders a conversation that ends with an answer as its training layout (the answer
    and the end token), and one that ends with a question as its generation prompt."""
    template = get_template(name)
    if template.rounds is not None:
        return _rounds_jinja(template)
    if template.thinking is not None:
        return glm45.jinja(template.thinking)
    prefix = "".join(template.prefix)
    header = "<|assistant|>" + ("\n" if template.prompt_newline else "")
    return (
        prefix + "{% for m in messages %}<|{{ m['role'] }}|>" + template.text_joiner + "{{ m['content'] }}"
        "{% endfor %}{% if add_generation_prompt %}" + header + "{% endif %}"
    )


def detect_template(tokenizer) -> str:
    """The template a tokenizer's special tokens imply: <sop> with roles and GLM-4.5's tool-call tokens
    (<arg_key>) -> glm4_moe; <sop> with roles -> glm4 (glmz1 when its own chat template opens the answer with
    `<think>`, as GLM-Z1's does), without -> chatglm (ChatGLM-6B); sop with roles -> chatglm3; else chatglm2."""
    vocab = tokenizer.get_vocab()
    if "<sop>" in vocab and "<|user|>" in vocab and "<arg_key>" in vocab and "<think>" in vocab:
        return thinking_generation(tokenizer)
    if "<sop>" in vocab and "<|user|>" in vocab:
        return "glmz1" if own_prompt(tokenizer).endswith("<think>") else "glm4"
    if "<sop>" in vocab:
        return "chatglm"
    if "sop" in vocab:
        return "chatglm3" if "<|user|>" in vocab else "chatglm2"

    raise ModelError("model.template_unknown", templates=", ".join(TEMPLATES))


def own_prompt(tokenizer) -> str:
    """The tokenizer's own chat template's generation prompt for one question ("" without a template)."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    try:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
        )
    except Exception:  # noqa: BLE001 - a template that cannot render a question: no prompt to read
        return ""


def thinking_generation(tokenizer) -> str:
    """glm47 when the tokenizer's own chat template writes GLM-4.7's tight layout (`<|user|>` straight followed by
    the text), else glm4_moe (GLM-4.5 / 4.6, and a tokenizer without a template)."""
    if not getattr(tokenizer, "chat_template", None):
        return "glm4_moe"
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render the probe: the GLM-4.5 default
        return "glm4_moe"
    return "glm47" if "<|user|>x" in text else "glm4_moe"


def resolve_template(name: str, tokenizer, enable_thinking: bool = True) -> str:
    """The template's name (auto: detected from the tokenizer), with NO_THINKING appended when thinking is switched
    off for a template that thinks."""
    found = get_template(detect_template(tokenizer) if name == AUTO else name)
    if not enable_thinking and found.thinking is not None and found.thinking.enabled:
        return found.name + NO_THINKING
    return found.name


# One piece of a sample: token ids as they are, or a text still to encode (on its own: see the module docstring).
Part = list[int] | str


class TemplateEncoder:
    """Encodes conversations for one tokenizer and template; caches special token ids.

    A conversation becomes a plan: pieces of parts (token ids, or a text to encode on its own) with whether the
    piece carries loss. `encode` resolves one plan text by text; `encode_batch` resolves many plans with one
    tokenizer call for all their texts. Both assemble the same plan, so they give the same ids and labels."""

    def __init__(self, tokenizer, template: Template | str):
        self.tokenizer = tokenizer
        if isinstance(template, str):
            template = get_template(resolve_template(template, tokenizer))
        self.template = template
        self._ids: dict[str, int] = {}
        self._backend = None  # the fast tokenizer's own Rust tokenizer, set up as `encode` uses it (batches)

    def __getstate__(self) -> dict:
        # The Rust backend copy is rebuilt where it is used (a worker process), not pickled along.
        return {**self.__dict__, "_backend": None}

    def token_id(self, token: str) -> int:
        if token not in self._ids:
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == self.tokenizer.unk_token_id:
                raise ModelError("model.template_token_missing", token=token, template=self.template.name)
            self._ids[token] = token_id
        return self._ids[token]

    @property
    def stop_token_ids(self) -> list[int]:
        return [self.token_id(token) for token in self.template.stop_tokens]

    def _text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _texts(self, texts: list[str]) -> list[list[int]]:
        """`_text` of each text, in one call. A fast tokenizer's `encode` is its Rust `encode_batch` with
        truncation and padding off and its own `split_special_tokens`: called here directly on a copy set up the
        same way, for many texts at once. Any other tokenizer encodes text by text."""
        if not getattr(self.tokenizer, "is_fast", False) or getattr(self.tokenizer, "backend_tokenizer", None) is None:
            return [self._text(text) for text in texts]
        if self._backend is None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            backend.no_truncation()
            backend.no_padding()
            backend.encode_special_tokens = bool(getattr(self.tokenizer, "split_special_tokens", False))
            self._backend = backend
        found = self._backend.encode_batch([text for text in texts if text], add_special_tokens=False)
        encoded = iter(found)
        return [next(encoded).ids if text else [] for text in texts]

    def _prefix(self) -> list[int]:
        return [self.token_id(t) for t in self.template.prefix]

    def check(self, conversation: Conversation) -> None:
        """RowError when this template cannot express the conversation: tools, tool calls and reasoning need the
        GLM-4.5 generation's format (a row of them would otherwise train without them). Images need a GLM-V model:
        a text model would read the `<image>` placeholder as five characters."""
        if conversation.images:
            raise RowError("row.images_need_vision_model", template=self.template.name)
        form = self.template.thinking
        if form is not None and form.tools:
            return
        for number, message in enumerate(conversation.messages, start=1):
            if message["role"] == "tool" or message.get("tool_calls") or conversation.tools:
                raise RowError("row.template_no_tools", number=number, template=self.template.name)
            if form is None and (message.get("reasoning") or "</think>" in (message.get("content") or "")):
                raise RowError("row.template_no_reasoning", number=number, template=self.template.name)

    def _plan(self, conversation: Conversation) -> list[tuple[list[Part], bool]]:
        """(parts, carries_loss) pieces in order."""
        self.check(conversation)
        if self.template.thinking is not None:
            found = glm45.pieces(conversation.messages, conversation.system, conversation.tools, self.template.thinking)
            return [([self._prefix()], False)] + [([text], trains) for text, trains in found]
        if self.template.rounds is not None:
            return self._round_plan(conversation)
        pieces: list[tuple[list[Part], bool]] = [([self._prefix()], False)]
        if conversation.system:
            pieces.append(([[self.token_id(self.template.role_token("system"))], "\n", conversation.system], False))
        previous = None
        for message in conversation.messages:
            role_id = self.token_id(self.template.role_token(message["role"]))
            if message["role"] == "assistant":
                pieces.append(([[role_id]], False))
                pieces.append((["\n"], not self.template.prompt_newline))
                pieces.append(([message["content"]], True))
            else:
                # The role token that follows an answer ends that answer: learn to emit it.
                pieces.append(([[role_id]], previous == "assistant"))
                pieces.append((["\n", message["content"]], False))
            previous = message["role"]
        return pieces

    def _round_plan(self, conversation: Conversation) -> list[tuple[list[Part], bool]]:
        """The history as prompt text (one text, encoded whole as THUDM encodes it), then the last answer."""
        history, answer = conversation.messages[:-1], conversation.messages[-1]["content"]
        return [
            (self._generation_prompt_plan(history, conversation.system), False),
            ([[self.token_id(t) for t in self.template.answer_prefix], answer], True),
        ]

    def _generation_prompt_plan(self, messages: list[dict[str, str]], system: str) -> list[Part]:
        """A rounds template's prompt: prefix, the rounds' text, the prompt suffix (no answer prefix)."""
        suffix = [self.token_id(t) for t in self.template.prompt_suffix]
        return [self._prefix(), self.template.rounds.text(list(messages), system), suffix]

    def _resolve(self, parts: list[Part]) -> list[int]:
        ids: list[int] = []
        for part in parts:
            ids += self._text(part) if isinstance(part, str) else part
        return ids

    def _assemble(self, plan: list[tuple[list[Part], bool]], encoded) -> tuple[list[int], list[int]]:
        """Ids and labels of a plan (no truncation); `encoded(text)` gives a text's ids."""
        input_ids: list[int] = []
        labels: list[int] = []
        for parts, trains in plan:
            ids: list[int] = []
            for part in parts:
                ids += encoded(part) if isinstance(part, str) else part
            input_ids += ids
            labels += ids if trains else [IGNORE_INDEX] * len(ids)
        end_id = self.token_id(self.template.end_token)
        input_ids.append(end_id)
        labels.append(end_id)
        return input_ids, labels

    def encode(self, conversation: Conversation, cutoff_len: int) -> tuple[list[int], list[int]]:
        """Token ids and labels (IGNORE_INDEX where no loss), truncated to cutoff_len."""
        input_ids, labels = self._assemble(self._plan(conversation), self._text)
        return input_ids[:cutoff_len], labels[:cutoff_len]

    def encode_batch(self, conversations: list[Conversation]) -> list[tuple[list[int], list[int]]]:
        """`encode` of each conversation, untruncated: every distinct text of the batch encoded in one call."""
        plans = [self._plan(conversation) for conversation in conversations]
        texts = list(
            dict.fromkeys(part for plan in plans for parts, _ in plan for part in parts if isinstance(part, str))
        )
        known = dict(zip(texts, self._texts(texts)))
        return [self._assemble(plan, known.__getitem__) for plan in plans]

    def encode_completion(
        self, messages: list[dict[str, str]], answer: str, system: str = "", tools: list[dict] | None = None
    ) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) of `answer` to a history ending with a user turn, for preference training.

        The prompt is exactly what chat and generation feed the model (`encode_prompt`); prompt + completion is
        exactly the ids SFT trains on for that conversation (`encode`), so the completion is the answer's tokens
        that carry loss there: the answer and the end token (and, for chatglm3, the newline the model writes
        after `<|assistant|>`)."""
        prompt = self.encode_prompt(messages, system, tools)
        full, _ = self.encode(
            Conversation([*messages, {"role": "assistant", "content": answer}], system, tools=tools), 10**9
        )
        opened = self.template.thinking.generation() if self.template.thinking is not None else ""
        if full[: len(prompt)] != prompt and opened:
            # GLM-4.7 prompts with `<think>` open, but its template writes an answer without reasoning as `</think>`
            # straight after <|assistant|>: the pair is split there, where SFT's loss starts too.
            prompt = prompt[: len(prompt) - len(self._text(opened))]
        if full[: len(prompt)] != prompt:  # every template builds both from the same segments; a guard, not a path
            raise AssertionError(f"template {self.template.name}: the prompt is not a prefix of the conversation")
        return prompt, full[len(prompt) :]

    def encode_prompt(
        self, messages: list[dict[str, str]], system: str = "", tools: list[dict] | None = None
    ) -> list[int]:
        """Ids for generation: the history (ending with a user or tool turn) plus the assistant header."""
        if self.template.thinking is not None:
            ids: list[int] = []
            for parts, _ in self._plan(Conversation(list(messages), system, tools=tools)):
                ids += self._resolve(parts)
            return ids + self._text(glm45.generation_prompt(self.template.thinking))
        if self.template.rounds is not None:
            answer_prefix = [self.token_id(t) for t in self.template.answer_prefix]
            return self._resolve(self._generation_prompt_plan(messages, system)) + answer_prefix
        ids: list[int] = []
        for parts, _ in self._plan(Conversation(list(messages), system)):
            ids += self._resolve(parts)
        header = [self.token_id(self.template.role_token("assistant"))]
        return ids + header + (self._text("\n") if self.template.prompt_newline else [])

"""Chat templates: a conversation -> token ids plus labels in which only the assistant's replies carry loss.

We build ids segment by segment (role token, then text) instead of rendering a string and tokenizing it, so
the loss mask is exact by construction. Text pieces are encoded separately, as THUDM's own code does: for
SentencePiece tokenizers (ChatGLM2/3) that matters, since every encode call adds the dummy prefix '▁'.

- glm4:     [gMASK]<sop><|system|>\n{system}<|user|>\n{query}<|assistant|>\n{answer}<|user|>\n...
            An answer is followed by the next `<|user|>` (or `<|endoftext|>` at the end); that token carries
            loss too, so the model learns to stop: both are in the generation stop list.
- chatglm3: the same role tokens after `[gMASK] sop`; the model writes the "\n" after `<|assistant|>` itself.
- chatglm2: plain text rounds, `[Round 1]\n\n问：{query}\n\n答：{answer}\n\n[Round 2]...`; as in THUDM's
            P-tuning code, the history is prompt and only the last answer (plus `</s>`) carries loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.data.formats import Conversation

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Template:
    name: str
    prefix: tuple[str, ...]
    stop_tokens: tuple[str, ...] = ("<|endoftext|>", "<|user|>", "<|observation|>")
    end_token: str = "<|endoftext|>"
    prompt_newline: bool = True  # the generation prompt ends with "<|assistant|>\n" (else the model writes it)
    rounds: bool = False  # ChatGLM2's text rounds instead of role tokens
    # How a rendered string joins role token and text, so that tokenizing it whole gives the ids that encoding
    # segment by segment gives: SentencePiece (chatglm3) writes the dummy prefix of each text as a space.
    text_joiner: str = "\n"

    def role_token(self, role: str) -> str:
        return f"<|{role}|>"


TEMPLATES: dict[str, Template] = {
    "glm4": Template("glm4", prefix=("[gMASK]", "<sop>")),
    "chatglm3": Template(
        "chatglm3",
        prefix=("[gMASK]", "sop"),
        stop_tokens=("</s>", "<|user|>", "<|observation|>"),
        end_token="</s>",
        prompt_newline=False,
        text_joiner="\n ",
    ),
    "chatglm2": Template("chatglm2", prefix=("[gMASK]", "sop"), stop_tokens=("</s>",), end_token="</s>", rounds=True),
}
AUTO = "auto"


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        from core.errors import config_error

        raise config_error(
            "template", "config.auto_or_one_of", value=name, show_value=True, choices=", ".join(TEMPLATES)
        )
    return TEMPLATES[name]


def chat_template_jinja(name: str) -> str:
    """The template as Jinja, saved with tokenizers we write (the demo model, converted checkpoints) for users of
    `apply_chat_template`. Generated from the one `Template` definition; a test checks the two agree token for
    token."""
    template = get_template(name)
    prefix = "".join(template.prefix)
    if template.rounds:
        return (
            prefix + "{% set n = namespace(i=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
            "{% set n.i = n.i + 1 %}[Round {{ n.i }}]\n\n问：{{ m['content'] }}\n\n答：{% elif m['role'] == "
            "'assistant' %}{{ m['content'] }}\n\n{% endif %}{% endfor %}"
        )
    header = "<|assistant|>" + ("\n" if template.prompt_newline else "")
    return (
        prefix + "{% for m in messages %}<|{{ m['role'] }}|>" + template.text_joiner + "{{ m['content'] }}"
        "{% endfor %}{% if add_generation_prompt %}" + header + "{% endif %}"
    )


def detect_template(tokenizer) -> str:
    """The template a tokenizer's special tokens imply: <sop> -> glm4; sop with roles -> chatglm3; else chatglm2."""
    vocab = tokenizer.get_vocab()
    if "<sop>" in vocab:
        return "glm4"
    if "sop" in vocab:
        return "chatglm3" if "<|user|>" in vocab else "chatglm2"
    from core.errors import ModelError

    raise ModelError("model.template_unknown", templates=", ".join(TEMPLATES))


def resolve_template(name: str, tokenizer) -> str:
    return detect_template(tokenizer) if name == AUTO else get_template(name).name


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
                from core.errors import ModelError

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

    def _plan(self, conversation: Conversation) -> list[tuple[list[Part], bool]]:
        """(parts, carries_loss) pieces in order."""
        if self.template.rounds:
            history, answer = conversation.messages[:-1], conversation.messages[-1]["content"]
            return [
                ([self._prefix(), self._rounds_text(history, conversation.system)], False),
                ([answer], True),
            ]
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

    @staticmethod
    def _rounds_text(messages: list[dict[str, str]], system: str) -> str:
        """ChatGLM2's prompt text for a history ending with a user turn."""
        text = f"{system}\n\n" if system else ""
        for number, index in enumerate(range(0, len(messages), 2), start=1):
            text += f"[Round {number}]\n\n问：{messages[index]['content']}\n\n答："
            if index + 1 < len(messages):
                text += f"{messages[index + 1]['content']}\n\n"
        return text

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

    def encode_prompt(self, messages: list[dict[str, str]], system: str = "") -> list[int]:
        """Ids for generation: the history (ending with a user turn) plus the assistant header."""
        if self.template.rounds:
            return self._prefix() + self._text(self._rounds_text(list(messages), system))
        ids: list[int] = []
        for parts, _ in self._plan(Conversation(list(messages), system)):
            for part in parts:
                ids += self._text(part) if isinstance(part, str) else part
        header = [self.token_id(self.template.role_token("assistant"))]
        return ids + header + (self._text("\n") if self.template.prompt_newline else [])

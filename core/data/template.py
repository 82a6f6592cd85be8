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


class TemplateEncoder:
    """Encodes conversations for one tokenizer and template; caches special token ids."""

    def __init__(self, tokenizer, template: Template | str):
        self.tokenizer = tokenizer
        if isinstance(template, str):
            template = get_template(resolve_template(template, tokenizer))
        self.template = template
        self._ids: dict[str, int] = {}

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

    def _prefix(self) -> list[int]:
        return [self.token_id(t) for t in self.template.prefix]

    def _segments(self, conversation: Conversation) -> list[tuple[list[int], bool]]:
        """(ids, carries_loss) pieces in order."""
        if self.template.rounds:
            return self._round_segments(conversation)
        pieces: list[tuple[list[int], bool]] = [(self._prefix(), False)]
        if conversation.system:
            pieces.append(
                (
                    [self.token_id(self.template.role_token("system"))]
                    + self._text("\n")
                    + self._text(conversation.system),
                    False,
                )
            )
        previous = None
        for message in conversation.messages:
            role_id = self.token_id(self.template.role_token(message["role"]))
            if message["role"] == "assistant":
                pieces.append(([role_id], False))
                pieces.append((self._text("\n"), not self.template.prompt_newline))
                pieces.append((self._text(message["content"]), True))
            else:
                # The role token that follows an answer ends that answer: learn to emit it.
                pieces.append(([role_id], previous == "assistant"))
                pieces.append((self._text("\n") + self._text(message["content"]), False))
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

    def _round_segments(self, conversation: Conversation) -> list[tuple[list[int], bool]]:
        history, answer = conversation.messages[:-1], conversation.messages[-1]["content"]
        return [
            (self._prefix() + self._text(self._rounds_text(history, conversation.system)), False),
            (self._text(answer), True),
        ]

    def encode(self, conversation: Conversation, cutoff_len: int) -> tuple[list[int], list[int]]:
        """Token ids and labels (IGNORE_INDEX where no loss), truncated to cutoff_len."""
        input_ids: list[int] = []
        labels: list[int] = []
        for ids, trains in self._segments(conversation):
            input_ids += ids
            labels += ids if trains else [IGNORE_INDEX] * len(ids)
        end_id = self.token_id(self.template.end_token)
        input_ids.append(end_id)
        labels.append(end_id)
        return input_ids[:cutoff_len], labels[:cutoff_len]

    def encode_completion(
        self, messages: list[dict[str, str]], answer: str, system: str = ""
    ) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) of `answer` to a history ending with a user turn, for preference training.

        The prompt is exactly what chat and generation feed the model (`encode_prompt`); prompt + completion is
        exactly the ids SFT trains on for that conversation (`encode`), so the completion is the answer's tokens
        that carry loss there: the answer and the end token (and, for chatglm3, the newline the model writes
        after `<|assistant|>`)."""
        prompt = self.encode_prompt(messages, system)
        full, _ = self.encode(Conversation([*messages, {"role": "assistant", "content": answer}], system), 10**9)
        if full[: len(prompt)] != prompt:  # every template builds both from the same segments; a guard, not a path
            raise AssertionError(f"template {self.template.name}: the prompt is not a prefix of the conversation")
        return prompt, full[len(prompt) :]

    def encode_prompt(self, messages: list[dict[str, str]], system: str = "") -> list[int]:
        """Ids for generation: the history (ending with a user turn) plus the assistant header."""
        if self.template.rounds:
            return self._prefix() + self._text(self._rounds_text(list(messages), system))
        ids: list[int] = []
        for piece, _ in self._segments(Conversation(list(messages), system)):
            ids += piece
        header = [self.token_id(self.template.role_token("assistant"))]
        return ids + header + (self._text("\n") if self.template.prompt_newline else [])

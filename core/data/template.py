"""Chat templates: a conversation -> token ids plus labels in which only the assistant's replies carry loss.

We build ids segment by segment (role token, then text) instead of rendering a string and tokenizing it, so
the loss mask is exact by construction. The result equals the tokenizer's own jinja template (a test checks).

GLM-4 layout:  [gMASK]<sop><|system|>\n{system}<|user|>\n{query}<|assistant|>\n{answer}<|user|>\n...
An answer is followed by the next `<|user|>` (or `<|endoftext|>` at the end); that token carries loss too,
so the model learns to stop: both are in the generation stop list.
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

    def role_token(self, role: str) -> str:
        return f"<|{role}|>"


TEMPLATES: dict[str, Template] = {
    "glm4": Template("glm4", prefix=("[gMASK]", "<sop>")),
    # ChatGLM3 uses the same role tokens; its prefix tokens are spelled without angle brackets.
    "chatglm3": Template("chatglm3", prefix=("[gMASK]", "sop")),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown template '{name}'; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


class TemplateEncoder:
    """Encodes conversations for one tokenizer and template; caches special token ids."""

    def __init__(self, tokenizer, template: Template | str):
        self.tokenizer = tokenizer
        self.template = get_template(template) if isinstance(template, str) else template
        self._ids: dict[str, int] = {}

    def token_id(self, token: str) -> int:
        if token not in self._ids:
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == self.tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no special token {token} needed by template "
                                 f"'{self.template.name}': is this a GLM tokenizer?")
            self._ids[token] = token_id
        return self._ids[token]

    @property
    def stop_token_ids(self) -> list[int]:
        return [self.token_id(token) for token in self.template.stop_tokens]

    def _text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _segments(self, conversation: Conversation) -> list[tuple[list[int], bool]]:
        """(ids, carries_loss) pieces in order."""
        pieces: list[tuple[list[int], bool]] = [([self.token_id(t) for t in self.template.prefix], False)]
        if conversation.system:
            pieces.append(([self.token_id(self.template.role_token("system"))] + self._text("\n" + conversation.system), False))
        previous = None
        for message in conversation.messages:
            role_id = self.token_id(self.template.role_token(message["role"]))
            if message["role"] == "assistant":
                pieces.append(([role_id] + self._text("\n"), False))
                pieces.append((self._text(message["content"]), True))
            else:
                # The role token that follows an answer ends that answer: learn to emit it.
                pieces.append(([role_id], previous == "assistant"))
                pieces.append((self._text("\n" + message["content"]), False))
            previous = message["role"]
        return pieces

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

    def encode_prompt(self, messages: list[dict[str, str]], system: str = "") -> list[int]:
        """Ids for generation: the history (ending with a user turn) plus the assistant header."""
        ids: list[int] = []
        for piece, _ in self._segments(Conversation(list(messages), system)):
            ids += piece
        return ids + [self.token_id(self.template.role_token("assistant"))] + self._text("\n")

    def render_tokens(self, conversation: Conversation, cutoff_len: int) -> list[tuple[str, bool]]:
        """(token text, carries loss) for display in the data preview."""
        input_ids, labels = self.encode(conversation, cutoff_len)
        return [(self.tokenizer.decode([tid]), label != IGNORE_INDEX) for tid, label in zip(input_ids, labels)]

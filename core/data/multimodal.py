"""An image row -> what a GLM-V model trains on: token ids with the image tokens widened, labels on the answers only,
`mm_token_type_ids`, and the image processor's `pixel_values` / `image_grid_thw`.

The text is the model's own chat template (`tokenizer.apply_chat_template`, the checkpoint's chat_template.jinja), never
a copy of it: each image part renders as `<|begin_of_image|><|image|><|end_of_image|>`, and the single `<|image|>` then
becomes one token per merged patch (t*h*w / merge^2 after the processor's resize), as transformers' Glm4vProcessor does.
Which characters are answers is found by rendering each conversation prefix: the answer is what the template adds after
the prompt with the generation prompt, so the loss mask follows the template whatever it writes around the answer (where
a later turn rewrites an answer, as GLM-4.5V's drops an earlier answer's reasoning, the answer runs to its turn's end
and the empty think written in its place is not learned). An answer also learns the turn token that follows it
(`<|user|>` / `<|observation|>`, the model's stop tokens) and the last one `<|endoftext|>`, as core/data/template.py
does for the text models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.data.formats import IMAGE_PLACEHOLDER, Conversation, RowError
from core.data.images import open_images

IGNORE_INDEX = -100
IMAGE_TOKEN = "<|image|>"
END_TOKEN = "<|endoftext|>"
TURN_TOKENS = ("<|user|>", "<|observation|>")
EMPTY_THINK = "\n<think></think>"  # what GLM-4.5V's template writes for an earlier answer's dropped reasoning


def _content(text: str, with_images: bool) -> str | list[dict[str, Any]]:
    """A user message's content: its text, or (an image row) text and image parts in the placeholders' order."""
    if not with_images or IMAGE_PLACEHOLDER not in text:
        return text
    parts: list[dict[str, Any]] = []
    for number, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if number:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def chat_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation as the messages a Hugging Face chat template reads (OpenAI's shape, image parts)."""
    with_images = conversation.images is not None
    messages: list[dict[str, Any]] = [{"role": "system", "content": conversation.system}] if conversation.system else []
    for turn in conversation.messages:
        message: dict[str, Any] = {"role": turn["role"], "content": turn["content"]}
        if turn["role"] == "user":
            message["content"] = _content(turn["content"], with_images)
        if turn.get("reasoning"):
            message["reasoning_content"] = turn["reasoning"]
        if turn.get("tool_calls"):
            message["tool_calls"] = [{"type": "function", "function": call} for call in turn["tool_calls"]]
        messages.append(message)
    return messages


def first_messages(conversation: Conversation, count: int) -> Conversation:
    """The conversation's first `count` messages with the images their placeholders name (a prompt to answer)."""
    kept = conversation.messages[:count]
    images = None
    if conversation.images is not None:
        placed = sum(str(m.get("content") or "").count(IMAGE_PLACEHOLDER) for m in kept if m["role"] == "user")
        images = conversation.images[:placed]
    return Conversation(kept, system=conversation.system, tools=conversation.tools, images=images)


class VisionEncoder:
    """Encodes image rows (and text rows) for a GLM-V model with its tokenizer and image processor."""

    def __init__(self, tokenizer, image_processor, template_kwargs: dict[str, Any] | None = None):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template_kwargs = dict(template_kwargs or {})  # passed to the template: {"enable_thinking": False}
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.end_token_id = tokenizer.convert_tokens_to_ids(END_TOKEN)
        self.merge_area = image_processor.merge_size**2

    def render(self, conversation: Conversation, upto: int | None = None, generation_prompt: bool = False) -> str:
        """The template's text for the first `upto` messages (all: None), one `<|image|>` per image."""
        messages = chat_messages(conversation)
        offset = len(messages) - len(conversation.messages)  # the system message, if any
        chosen = messages if upto is None else messages[: offset + upto]
        return self.tokenizer.apply_chat_template(
            chosen,
            tools=conversation.tools,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            **self.template_kwargs,
        )

    def check(self, conversation: Conversation) -> None:
        """RowError for what the model's own template would drop without a word: GLM-4.1V's template has no tools,
        tool turns or `reasoning_content` (its thinking is written in the answer, `<think>…</think>` included)."""
        template = str(self.tokenizer.chat_template or "")
        for number, turn in enumerate(conversation.messages, start=1):
            if (conversation.tools or turn.get("tool_calls") or turn["role"] == "tool") and "tool" not in template:
                raise RowError("row.vision_template_no_tools", number=number)
            if turn.get("reasoning") and "reasoning_content" not in template:
                raise RowError("row.vision_template_no_reasoning", number=number)

    def answer_spans(self, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
        """The whole text and the character spans that carry loss: each answer, plus the turn token after it."""
        self.check(conversation)
        text = self.render(conversation)
        spans = []
        for index, turn in enumerate(conversation.messages):
            if turn["role"] != "assistant":
                continue
            prompt = self.render(conversation, index, generation_prompt=True)
            if not text.startswith(prompt):
                raise RowError("row.template_not_incremental", number=index + 1)
            start, through = len(prompt), self.render(conversation, index + 1)
            if through.startswith(prompt) and text.startswith(through):
                end = len(through)
            else:  # rewritten once a user turn followed (GLM-4.5V drops an earlier answer's reasoning for an empty
                # think, not learned: the model writes its own thought there): the answer runs to its turn's end
                end = min((found for token in TURN_TOKENS if (found := text.find(token, start)) >= 0), default=-1)
                if end < 0:
                    raise RowError("row.template_not_incremental", number=index + 1)
                if text.startswith(EMPTY_THINK, start):
                    start += len(EMPTY_THINK)
            following = next((token for token in TURN_TOKENS if text.startswith(token, end)), "")
            spans.append((start, end + len(following)))
        return text, spans

    def image_features(self, images: list, pixels: bool = True) -> tuple[dict[str, Any], list[int]]:
        """The image processor's tensors for `images` and how many `<|image|>` tokens each image takes. Without
        `pixels` only the counts, from the images' sizes by the processor's own resize rule
        (`get_number_of_image_patches`): what counting tokens needs, without making any pixels."""
        if not pixels:
            patches = self.image_processor.get_number_of_image_patches
            return {}, [patches(image.height, image.width) // self.merge_area for image in images]
        features = self.image_processor(images=images, return_tensors="pt") if images else {}
        return features, [int(grid.prod()) // self.merge_area for grid in features.get("image_grid_thw", [])]

    def encode_prompt(
        self, conversation: Conversation, base_dir: Path | None = None, pixels: bool = True
    ) -> dict[str, Any]:
        """A chat request's generation inputs (batch of one, tensors): the template's prompt with the generation
        prompt, image tokens widened, mm_token_type_ids, and (with `pixels`) the images' pixels and grids."""
        import torch

        features, counts = self.image_features(open_images(conversation, base_dir), pixels)
        total = len(counts)
        text = self.render(conversation, generation_prompt=True)
        ids: list[int] = []
        for token in self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            ids += [token] * (counts.pop(0) if token == self.image_token_id and counts else 1)
        if counts:
            raise RowError("row.template_image_count", images=total, rendered=total - len(counts))
        input_ids = torch.tensor([ids])
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == self.image_token_id).long(),
        }
        if "pixel_values" in features:
            inputs["pixel_values"] = features["pixel_values"]
            inputs["image_grid_thw"] = features["image_grid_thw"]
        return inputs

    def encode(self, conversation: Conversation, base_dir: Path | None = None, pixels: bool = True) -> dict[str, Any]:
        """One row's training sample: lists for the ids, labels, attention mask and mm_token_type_ids; with `pixels`
        the image processor's tensors (absent for a row without images)."""
        images = open_images(conversation, base_dir)
        features, counts = self.image_features(images, pixels)
        text, spans = self.answer_spans(conversation)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = []
        labels: list[int] = []
        placed = 0
        for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
            if token == self.image_token_id:
                width = counts[placed] if placed < len(counts) else 1
                placed += 1
                ids += [token] * width
                labels += [IGNORE_INDEX] * width
                continue
            ids.append(token)
            labels.append(token if any(end > left and start < right for left, right in spans) else IGNORE_INDEX)
        if placed != len(counts):
            raise RowError("row.template_image_count", images=len(counts), rendered=placed)
        ids.append(self.end_token_id)
        labels.append(self.end_token_id)
        sample: dict[str, Any] = {
            "input_ids": ids,
            "labels": labels,
            "attention_mask": [1] * len(ids),
            "mm_token_type_ids": [int(token == self.image_token_id) for token in ids],
        }
        if "pixel_values" in features:
            sample["pixel_values"] = features["pixel_values"]
            sample["image_grid_thw"] = features["image_grid_thw"]
        return sample


def collate(samples: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Samples -> one right-padded batch of tensors; the images of all samples concatenated in order, which is
    how the GLM-V models take them (one row of `image_grid_thw` per image)."""
    import torch

    width = max(len(sample["input_ids"]) for sample in samples)
    pads = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "attention_mask": 0, "mm_token_type_ids": 0}
    batch: dict[str, Any] = {
        key: torch.tensor([sample[key] + [pad] * (width - len(sample[key])) for sample in samples])
        for key, pad in pads.items()
    }
    with_images = [sample for sample in samples if "pixel_values" in sample]
    if with_images:
        batch["pixel_values"] = torch.cat([sample["pixel_values"] for sample in with_images])
        batch["image_grid_thw"] = torch.cat([sample["image_grid_thw"] for sample in with_images])
    return batch

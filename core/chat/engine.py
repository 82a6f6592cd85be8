"""A chat engine: one base model in memory, LoRA adapters hot-loaded and switched by name, streaming replies.

Switching adapters never reloads the base: adapters are added to the loaded model (transformers' PEFT
integration) and selected per request. One generation runs at a time (a lock), so a request that names one
adapter can never see another's weights.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.data.formats import IMAGE_PLACEHOLDER, Conversation, RowError
from core.data.glm45 import GLM45
from core.data.multimodal import VisionEncoder
from core.data.template import NO_THINKING, TemplateEncoder, get_template
from core.errors import ModelError
from core.methods import load_input_adapter
from core.methods.base import InputAdapter
from core.models.loader import load_model, load_tokenizer, locate_model, prepare_model
from core.models.vision import load_image_processor

log = logging.getLogger("glm_workbench")


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    greedy: bool = False
    seed: int | None = None  # makes sampling reproducible
    # The GLM-4.5 generation: false answers without reasoning, as its template's enable_thinking=False prompts it
    enable_thinking: bool = True

    def generate_kwargs(self) -> dict:
        if self.greedy or self.temperature <= 0:
            return {"do_sample": False, "repetition_penalty": self.repetition_penalty}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }


_CHECKED: dict[str, tuple] = {}  # adapter folder -> the state of its files when they were last found whole


def check_adapter_files(folder: str | Path) -> None:
    """Refuse an adapter folder with a damaged file (cut short, invalid JSON), naming the file. A folder whose
    files have not changed since they were found whole is not read again (the API checks before each request)."""
    from core.files import damaged_file

    folder = Path(folder)
    try:
        state = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
    except OSError:
        state = None
    if state is not None and _CHECKED.get(str(folder)) == state:
        return
    found = damaged_file(folder)
    if found is not None:
        raise ModelError("model.adapter_damaged", folder=str(folder), file=found[0], problem=found[1])
    if state is not None:
        _CHECKED[str(folder)] = state


def adapter_key(name: str) -> str:
    """peft stores adapters in a ModuleDict: names may not contain dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


@dataclass
class LoadedAdapter:
    folder: str
    stamp: float  # weights file mtime: a retrained adapter is reloaded
    key: str | None = None  # LoRA: its name inside the PeftModel
    prefix: InputAdapter | None = None  # an adapter that feeds the inputs (P-tuning v2's prefix), handed to generate


@lru_cache(maxsize=8)
def saved_image_processor(folder: str, stamp: int):
    """An adapter folder's image processor; `stamp` (its file's mtime) makes a retrained one load afresh."""
    return load_image_processor(folder)


class StopOnEvent:
    """A stopping criterion that ends generation once `event` is set (the reader went away, Abort)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class ChatEngine:
    def __init__(self, template: str = "auto"):
        self.template = template
        self.model = None
        self.tokenizer = None
        self.encoder: TemplateEncoder | None = None
        self.vision: VisionEncoder | None = None  # a GLM-V model's: prompts with images go through its own template
        self.model_path: str | None = None
        self.peft = None  # PeftModel wrapping self.model once an adapter is loaded (LoRA layers sit in place)
        self._adapters: dict[str, LoadedAdapter] = {}
        self._loads = 0
        self.last_generated_tokens = 0  # of the latest generation: shows that a cancelled one really stopped
        self._lock = threading.RLock()

    # ---- model and adapters -------------------------------------------------------------------------------
    def load_model(self, name_or_path: str, template: str | None = None, trust_remote_code: bool = False) -> str:
        """Load a base model unless it is already the loaded one. Returns its resolved path."""
        path = prepare_model(name_or_path, trust_remote_code)
        with self._lock:
            if template:
                self.template = template
            if path != self.model_path:
                log.info("chat: loading base model %s", path)
                self.tokenizer = load_tokenizer(path, trust_remote_code)
                self.model = load_model(path, trust_remote_code=trust_remote_code)
                self.model_path = path
                self.peft = None
                self._adapters.clear()
                self.vision = None
                if locate_model(path).vision_type:
                    self.vision = VisionEncoder(self.tokenizer, load_image_processor(path))
            self.encoder = TemplateEncoder(self.tokenizer, self.template)
            return path

    @property
    def reads_images(self) -> bool:
        """Whether the loaded model takes images (a GLM-V model)."""
        return self.vision is not None

    def _ensure_adapter(self, name: str, folder: str) -> LoadedAdapter:
        """Load (or reload, if its files changed) an adapter for the base model."""
        from peft import PeftModel

        weights = next(Path(folder).glob("adapter_model.*"), None)
        if weights is None:
            raise ModelError("model.no_adapter_weights", folder=str(folder))
        stamp = weights.stat().st_mtime
        known = self._adapters.get(name)
        if known and (known.folder, known.stamp) == (str(folder), stamp):
            return known
        check_adapter_files(folder)  # a truncated file is named, not met as a library's error mid-load
        log.info("chat: hot-loading adapter %s from %s", name, folder)
        inputs = load_input_adapter(folder)
        if inputs is not None:
            # A prefix is not a layer in the model: keep it aside and hand it to generate (see ptuning_v2).
            loaded = LoadedAdapter(str(folder), stamp, prefix=inputs)
        else:
            self._loads += 1
            key = f"{adapter_key(name)}_{self._loads}"  # a fresh key: a changed adapter replaces the old cleanly
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, str(folder), adapter_name=key)
            else:
                self.peft.load_adapter(str(folder), adapter_name=key)
            self.peft.eval()
            if known and known.key:
                self.peft.set_adapter(key)
                self.peft.delete_adapter(known.key)
            loaded = LoadedAdapter(str(folder), stamp, key=key)
        self._adapters[name] = loaded
        return loaded

    def _select(self, adapter: tuple[str, str] | None) -> tuple[AbstractContextManager, InputAdapter | None]:
        """Activate one adapter, or none for the plain base model: the context to generate in, and the
        P-tuning prefix to pass (if the adapter is one)."""
        loaded = self._ensure_adapter(*adapter) if adapter is not None else None
        if loaded is not None and loaded.key is not None:
            self.peft.set_adapter(loaded.key)
            return nullcontext(), None
        base_only = self.peft.disable_adapter() if self.peft is not None else nullcontext()
        return base_only, loaded.prefix if loaded is not None else None

    # ---- generation -----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a generation (or a model load) holds the engine now."""
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return False
        return True

    @property
    def context_length(self) -> int:
        """How many positions the loaded model has: prompt plus answer must fit."""
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", None) or getattr(config, "seq_length", None) or 2048)

    def stream(
        self,
        messages: list[dict[str, str]],
        system: str = "",
        adapter: tuple[str, str] | None = None,
        settings: GenerationSettings | None = None,
        model: str | None = None,
        cancel: threading.Event | None = None,
        tools: list[dict] | None = None,
    ) -> Iterator[str]:
        """Yield the reply as it grows (each item is the whole reply so far).

        `tools` (OpenAI's list) go into the prompt of a model whose template has them (the GLM-4.5 generation);
        messages may then hold tool calls and tool results. Such a model's reply keeps its `<think>` and
        `<tool_call>` markup, for `core.data.glm45.parse_reply` to take apart.

        `adapter` is (name, folder) of a LoRA or P-tuning v2 adapter, or None for the base model; `model`, when
        given, is loaded first (if it is not the loaded one) under the same lock as the generation. Setting
        `cancel` (or no longer reading) ends the generation at the next token. The answer never runs past the
        model's context: max_new_tokens is capped at what the prompt leaves.
        """
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        if self.model is None and model is None:
            raise RuntimeError("no model loaded: call load_model first")
        settings = settings or GenerationSettings()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []
        answers: list[list[int]] = []  # the generated ids, decoded whole at the end
        cancelled = cancel or threading.Event()  # set when the consumer stops reading (Stop, closed page, API)

        def work() -> None:
            # The lock is taken and released here, in the worker thread: a web server may resume this
            # generator on a different thread at every step, and a generator that is abandoned unclosed
            # must never leave the engine locked for the next request.
            try:
                with self._lock:
                    if cancelled.is_set():  # the reader left while this request waited for the model
                        streamer.end()
                        return
                    if model is not None:  # under the same lock: a concurrent request cannot swap the base between
                        self.load_model(model)
                    streamer.tokenizer = self.tokenizer
                    context, prefix = self._select(adapter)
                    if settings.seed is not None:
                        torch.manual_seed(settings.seed)
                    if self.vision is None and any(turn.get("images") for turn in messages):
                        raise ModelError("model.reads_text_only")
                    if self.vision is not None:
                        inputs = self.vision_inputs(messages, system, tools, settings.enable_thinking, adapter)
                        prompt = inputs["input_ids"][0].tolist()
                    else:
                        prompt = self.prompt_ids(messages, system, tools, settings.enable_thinking)
                        ids = torch.tensor([prompt])
                        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                    room = self.context_length - len(prompt) - (prefix.length if prefix is not None else 0)
                    if room < 1:
                        raise ModelError("model.prompt_too_long", tokens=len(prompt), context=self.context_length)
                    inputs = {key: value.to(self.model.device) for key, value in inputs.items()}
                    input_ids = inputs["input_ids"]
                    if prefix is not None:
                        inputs = prefix.generate_kwargs(self.model, input_ids, inputs["attention_mask"])
                    with torch.inference_mode(), context:
                        output = self.model.generate(
                            **inputs,
                            max_new_tokens=min(settings.max_new_tokens, room),
                            streamer=streamer,
                            eos_token_id=self.encoder.stop_token_ids,
                            pad_token_id=self.tokenizer.pad_token_id,
                            stopping_criteria=StoppingCriteriaList([StopOnEvent(cancelled)]),
                            **settings.generate_kwargs(),
                        )
                    self.last_generated_tokens = int(output.shape[1] - input_ids.shape[1])
                    answers.append(output[0, input_ids.shape[1] :].tolist())
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=work, name="chat-generate", daemon=True)
        worker.start()
        reply, shown = "", ""
        try:
            for piece in streamer:
                reply += piece
                shown = self.shown_reply(reply)
                yield shown
        finally:
            cancelled.set()
        worker.join()
        if errors:
            raise errors[0]
        if answers:
            # The streamer decodes piece by piece (and starts afresh after each newline, which loses a SentencePiece
            # tokenizer's space there); the last reply is the whole answer decoded at once, as the model's own
            # chat code decodes it.
            whole = self.shown_reply(self.tokenizer.decode(answers[0], skip_special_tokens=True))
            if whole != shown:
                yield whole

    @property
    def thinking_format(self):
        """The loaded model's GLM-4.5-generation format (core.data.glm45), or None for a template without one."""
        return self.encoder.template.thinking if self.encoder is not None else None

    @property
    def reply_format(self):
        """How the loaded model's replies are taken apart: its thinking format, or for a GLM-V model the GLM-4.5
        generation's (GLM-4.5V / 4.6V write its thinking and tool calls; GLM-4.1V-Thinking writes
        `<think>…</think><answer>…</answer>`, its thought folded away alike, and has no tools). None: all answer."""
        if self.thinking_format is not None:
            return self.thinking_format
        return GLM45 if self.vision is not None else None

    def reading(self, enable_thinking: bool = True):
        """reply_format for a reply asked for with thinking on or off: off, a reply that starts after a prompt that
        opens the reasoning (GLM-4.7, GLM-Z1) is all answer."""
        form = self.reply_format
        return dataclasses.replace(form, enabled=False) if form is not None and not enable_thinking else form

    @property
    def takes_tools(self) -> bool:
        """Whether the loaded model's template lists tools and writes tool calls (core/data/glm45.py)."""
        return self.thinking_format is not None and self.thinking_format.tools

    def prompt_ids(
        self, messages: list[dict], system: str = "", tools: list[dict] | None = None, enable_thinking: bool = True
    ) -> list[int]:
        """The generation prompt's ids; tools and thinking off only where the template has them."""

        if tools and not self.takes_tools:
            raise ModelError("model.template_no_tools", template=self.encoder.template.name)
        if self.thinking_format is None:
            return self.encoder.encode_prompt(messages, system)
        encoder = self.encoder
        if not enable_thinking:
            encoder = TemplateEncoder(
                self.tokenizer, get_template(encoder.template.name.removesuffix(NO_THINKING) + NO_THINKING)
            )
        return encoder.encode_prompt(messages, system, tools)

    def prompt_length(
        self,
        messages: list[dict],
        system: str = "",
        tools: list[dict] | None = None,
        enable_thinking: bool = True,
        adapter: tuple[str, str] | None = None,
    ) -> int:
        """How many positions the prompt takes, its image tokens included."""
        if self.vision is not None:  # the images' tokens counted from their sizes: no pixels made for a count
            inputs = self.vision_inputs(messages, system, tools, enable_thinking, adapter, pixels=False)
            return int(inputs["input_ids"].shape[1])
        return len(self.prompt_ids(messages, system, tools, enable_thinking))

    def vision_inputs(
        self,
        messages: list[dict],
        system: str = "",
        tools: list[dict] | None = None,
        enable_thinking: bool = True,
        adapter: tuple[str, str] | None = None,
        pixels: bool = True,
    ) -> dict:
        """A GLM-V model's generation inputs (`pixels` false: the ids alone). A user message may carry `images`
        (file paths, data: URIs); each sits where its message has an `<image>` placeholder, or before the text when
        it has none. The image processor is the adapter's where its run saved one (the pixel budget it trained
        with), else the model's."""
        turns, images = [], []
        for turn in messages:
            found = list(turn.get("images") or ())
            content = turn.get("content") or ""
            if found and content.count(IMAGE_PLACEHOLDER) != len(found):
                content = IMAGE_PLACEHOLDER * len(found) + content.replace(IMAGE_PLACEHOLDER, "")
            images += found
            turns.append({key: value for key, value in {**turn, "content": content}.items() if key != "images"})
        conversation = Conversation(turns, system=system, tools=tools, images=images or None)
        encoder = VisionEncoder(self.tokenizer, self._image_processor(adapter), {"enable_thinking": enable_thinking})
        try:
            return encoder.encode_prompt(conversation, pixels=pixels)
        except RowError as exc:
            raise ModelError("model.image_unusable", detail=exc.message) from None

    def _image_processor(self, adapter: tuple[str, str] | None):
        saved = Path(adapter[1]) / "preprocessor_config.json" if adapter is not None else None
        if saved is not None and saved.is_file():  # read once per version of the file, not once per request
            return saved_image_processor(str(saved.parent), saved.stat().st_mtime_ns)
        return self.vision.image_processor

    def shown_reply(self, text: str) -> str:
        """A (partial) decoded reply as the template's chat code shows it: ChatGLM-6B's through THUDM's
        process_response; the others without the leading newline ChatGLM3 writes after <|assistant|> itself."""
        template = self.encoder.template if self.encoder is not None else None
        if template is not None and template.answer_cleanup is not None:
            return template.answer_cleanup(text)
        if self.vision is not None:  # GLM-4.1V-Thinking's answer sits in <answer> tags
            text = text.replace("<answer>", "").replace("</answer>", "")
        return text.lstrip("\n")

    def chat(
        self,
        messages: list[dict[str, str]],
        system: str = "",
        adapter: tuple[str, str] | None = None,
        settings: GenerationSettings | None = None,
    ) -> str:
        reply = ""
        for partial in self.stream(messages, system, adapter, settings):
            reply = partial
        return reply.strip()

"""An OpenAI-compatible HTTP API over the chat engine: `/v1/models` and `/v1/chat/completions` (streaming too).

The `model` field names the base model or one of its adapters; adapters are switched on the one loaded base
(no reload). Requests are answered one at a time by the engine's lock, so two requests naming different
adapters never see each other's weights.

No single request can sink it: a body over `max_body_bytes` is refused (413) before it is read whole; a prompt
that with `max_tokens` does not fit the model's context is refused (400, context_length_exceeded), and without
`max_tokens` the answer is capped at what the context leaves; a client that goes away stops its generation at
the next token. Every bad request, streamed or not, gets OpenAI's error JSON with a 4xx status; the sentences
come from the locale tables, in the client's Accept-Language (English by default).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.access import AllowedDirs
from core.chat.engine import ChatEngine, GenerationSettings, check_adapter_files
from core.chat.turns import visible_parts
from core.data.formats import IMAGE_PLACEHOLDER, RowError
from core.data.glm45 import parse_reply
from core.data.images import fetch_image, is_remote, open_image
from core.errors import ModelError, WorkbenchError, internal_error
from core.i18n import Message, message

log = logging.getLogger("glm_workbench")

AdapterResolver = Callable[[], dict[str, str]]  # adapter name -> folder, read at request time
MAX_BODY_BYTES = 16 * 2**20  # a prompt of 128k tokens is under 1 MB of text; images come as data: URIs
MAX_QUEUE = 64  # requests that may wait while one generates (a few clients, a batch of 20); more: 429
DEFAULT_MAX_TOKENS = 512
SEED_LIMIT = 2**63 - 1


class APIError(Exception):
    def __init__(
        self,
        status: int,
        problem: Message,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(str(problem))
        self.status, self.problem, self.kind, self.code, self.param = status, problem, kind, code, param
        self.headers = dict(headers or {})

    def body(self, lang: str = "en") -> dict:
        return {
            "error": {"message": self.problem.render(lang), "type": self.kind, "param": self.param, "code": self.code}
        }

    def response(self, lang: str = "en") -> JSONResponse:
        return JSONResponse(status_code=self.status, content=self.body(lang), headers=self.headers or None)


def request_language(request: Request) -> str:
    return "zh" if request.headers.get("accept-language", "").lower().startswith("zh") else "en"


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] | None = None


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = ""
    type: str = "function"
    function: ToolFunction


class ToolSpec(BaseModel):
    """One of `tools`: OpenAI's {"type": "function", "function": {"name", "description", "parameters"}}."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function"] = "function"
    function: dict[str, Any]

    @field_validator("function")
    @classmethod
    def has_a_name(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("name"), str) or not value["name"].strip():
            raise ValueError("a function needs a name")
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None  # text, OpenAI's content parts, or null (a call-only answer)
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""

    def text_and_images(
        self, number: int, image_dirs: AllowedDirs | None, fetch_images: bool = False
    ) -> tuple[str, list[str]]:
        """A user message's text with an `<image>` placeholder where each image part was, and the images (data:
        URIs, or files inside `image_dirs`; a web address only with `fetch_images`). Each image is opened here, so a bad
        one is a 400 naming its part, not an error mid-answer."""
        if not isinstance(self.content, list):
            return self.text, []
        text, images = "", []
        for index, part in enumerate(self.content):
            kind = part.get("type")
            if kind == "text":
                text += str(part.get("text", ""))
            elif kind in ("image_url", "image"):
                param = f"messages[{number}].content[{index}]"
                value = part.get("image_url", part.get("image"))
                reference = value.get("url") if isinstance(value, dict) else value
                images.append(checked_image(reference, len(images) + 1, param, image_dirs, fetch_images))
                text += IMAGE_PLACEHOLDER
        return text, images


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat completion request that this server honours; others are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=SEED_LIMIT)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None  # auto, none, required, or {"type": "function", "function": …}
    chat_template_kwargs: dict[str, Any] | None = None  # {"enable_thinking": false}, as vLLM and SGLang take it

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def null_is_default(cls, value: Any, info) -> Any:
        return cls.model_fields[info.field_name].default if value is None else value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def requested_tokens(self) -> int | None:
        return self.max_tokens or self.max_completion_tokens

    @property
    def enable_thinking(self) -> bool:
        return bool((self.chat_template_kwargs or {}).get("enable_thinking", True))

    def tool_list(self) -> list[dict[str, Any]] | None:
        """The tools to put in the prompt: none for tool_choice none, only the named one for a named choice."""
        tools = [tool.model_dump(exclude_none=True) for tool in self.tools or ()]
        choice = self.tool_choice
        if choice in (None, "auto", "required") or not tools:
            return tools or None
        if choice == "none":
            return None
        name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        named = [tool for tool in tools if tool["function"]["name"] == name]
        if not named:
            known = ", ".join(tool["function"]["name"] for tool in tools)
            raise APIError(400, message("api.tool_choice_unknown", name=str(name), tools=known), param="tool_choice")
        return named

    def conversation(
        self, image_dirs: AllowedDirs | None = None, fetch_images: bool = False
    ) -> tuple[str, list[dict[str, Any]]]:
        """(system prompt, the turns), or APIError: it must end with the user or a tool's result; a tool result
        answers a call made before it; call arguments are JSON objects. A user turn's images (image_url parts)
        are in its `images`."""
        system, turns, call_ids = "", [], set()
        for number, item in enumerate(self.messages):
            if item.content is None and not (item.role == "assistant" and item.tool_calls):
                param = f"messages[{number}].content"  # only an answer that calls tools may come without text
                raise APIError(400, message("api.invalid_parameter", param=param, detail="required"), param=param)
            if item.role == "system":
                system = item.text
                continue
            turn: dict[str, Any] = {"role": item.role, "content": item.text}
            if item.role == "user":
                turn["content"], images = item.text_and_images(number, image_dirs, fetch_images)
                if images:
                    turn["images"] = images
            if item.role == "assistant" and item.reasoning_content:  # sent back, as GLM's own API asks
                turn["reasoning"] = item.reasoning_content
            if item.role == "assistant" and item.tool_calls:
                turn["tool_calls"] = [self._call(call, number) for call in item.tool_calls]
                call_ids.update(call.id for call in item.tool_calls if call.id)
            if item.role == "tool":
                if (
                    not turns
                    or turns[-1]["role"] not in ("assistant", "tool")
                    or (item.tool_call_id and call_ids and item.tool_call_id not in call_ids)
                ):
                    raise APIError(
                        400, message("api.unknown_tool_call", id=str(item.tool_call_id)), param=f"messages[{number}]"
                    )
            turns.append(turn)
        if not turns or turns[-1]["role"] not in ("user", "tool"):
            raise APIError(400, message("api.last_message_user"), param="messages")
        return system, turns

    @staticmethod
    def _call(call: ToolCall, number: int) -> dict[str, Any]:
        arguments = call.function.arguments
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise APIError(
                    400,
                    message("api.tool_arguments", name=call.function.name, detail=exc.msg),
                    param=f"messages[{number}].tool_calls",
                ) from None
        if not isinstance(arguments, dict):
            raise APIError(
                400,
                message("api.tool_arguments", name=call.function.name, detail=type(arguments).__name__),
                param=f"messages[{number}].tool_calls",
            )
        return {"name": call.function.name, "arguments": arguments}


def checked_image(
    reference: Any, number: int, param: str, image_dirs: AllowedDirs | None, fetch_images: bool = False
) -> str:
    """An image part's url, refused with a 400 unless it is a readable data: URI or a readable file inside one of
    `image_dirs` (none: files are refused). A web address is refused, or with `fetch_images` fetched (bounded in
    time and size) and passed on as a data: URI."""
    if not isinstance(reference, str) or not reference.strip():
        raise APIError(
            400, message("api.invalid_parameter", param=param, detail="image_url.url is required"), param=param
        )
    reference = reference.strip()
    try:
        if is_remote(reference):
            if not fetch_images:
                raise APIError(400, message("api.image_remote", param=param), param=param)
            reference = fetch_image(reference, number)
    except RowError as exc:
        raise APIError(400, message("api.image_invalid", param=param, detail=exc.message), param=param) from None
    if not reference.lower().startswith("data:"):
        path = reference[len("file://") :] if reference.lower().startswith("file://") else reference
        if image_dirs is None or not image_dirs.limited or not image_dirs.allows(path):
            raise APIError(400, message("api.image_path_refused", param=param), param=param)
        reference = path
    try:
        open_image(reference, number).close()
    except RowError as exc:
        raise APIError(400, message("api.image_invalid", param=param, detail=exc.message), param=param) from None
    return reference


def validation_error(exc: ValidationError | RequestValidationError) -> APIError:
    """pydantic's first complaint as OpenAI's error: which parameter, and what it must be."""
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = location[0] if location else None
    if len(location) > 1:
        param = f"{location[0]}[{location[1]}]" + "".join(f".{p}" for p in location[2:])
    return APIError(
        400, message("api.invalid_parameter", param=param or "body", detail=first.get("msg", "")), param=param
    )


async def read_body(request: Request, limit: int) -> dict:
    """The JSON body, read in pieces so that an oversized one is refused before it is held in memory."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, message("api.body_too_large", limit=limit), code="request_too_large")
    received = bytearray()
    async for piece in request.stream():
        received += piece
        if len(received) > limit:
            raise APIError(413, message("api.body_too_large", limit=limit), code="request_too_large")
    try:
        body = json.loads(bytes(received).decode("utf-8"))
    except UnicodeDecodeError:
        raise APIError(400, message("api.body_not_utf8")) from None
    except json.JSONDecodeError:
        raise APIError(400, message("api.body_not_json")) from None
    except RecursionError:  # [[[[... a thousand deep: 2 KB that would exhaust the parser's stack
        raise APIError(400, message("api.body_too_deep")) from None
    if not isinstance(body, dict):
        raise APIError(400, message("api.body_not_object"))
    return body


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    positions = [text.find(s) for s in stops if s and s in text]
    return (text[: min(positions)], True) if positions else (text, False)


class Queue:
    """Requests in flight (one generating, the rest waiting for the model): beyond `limit` waiting, a request is
    answered 429 at once with a Retry-After from the recent answers' duration, instead of queueing without end."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.lock = threading.Lock()
        self.recent = 5.0  # seconds one request takes, as an average of the latest ones

    def enter(self) -> Callable[[], None]:
        with self.lock:
            if self.limit >= 0 and self.count > self.limit:
                waiting = self.count
                raise APIError(
                    429,
                    message("api.queue_full", waiting=waiting - 1, limit=self.limit),
                    kind="rate_limit_error",
                    code="queue_full",
                    headers={"Retry-After": str(max(1, min(600, round(self.recent * waiting))))},
                )
            self.count += 1
        started, left = time.monotonic(), [False]

        def leave() -> None:  # idempotent: a stream's end and its response's background task both call it
            with self.lock:
                if left[0]:
                    return
                left[0] = True
                self.count -= 1
                self.recent = 0.8 * self.recent + 0.2 * (time.monotonic() - started)

        return leave


class OpenAIErrors:
    """The outermost guard: whatever escapes a route (a bug, a library's error) is answered as OpenAI's error
    JSON with a 500, never as starlette's plain-text page; the traceback goes to the log once."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(event):
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - answered, and logged with its traceback
            log.exception("API request failed")
            if started:
                return  # the answer has begun (a stream): its error event, if any, was already sent
            problem = internal_error(exc)
            response = APIError(500, problem, kind="server_error").response()
            await response(scope, receive, send)


def create_api(
    engine: ChatEngine,
    base_name: str,
    adapters: AdapterResolver,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_queue: int = MAX_QUEUE,
    image_dirs: list[str] | None = None,
    fetch_images: bool = False,
) -> FastAPI:
    """The FastAPI app. `engine` must already hold the base model; `adapters()` lists what may be named.
    `max_queue`: how many requests may wait while one generates (-1: no limit). `image_dirs`: folders whose
    image files a request may name by path (a GLM-V model); without them images come as data: URIs only.
    `fetch_images`: image_url parts may be http(s) addresses, which the server fetches."""
    allowed_images = AllowedDirs(image_dirs) if image_dirs else None
    app = FastAPI(title="GLM Workbench OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(OpenAIErrors)
    queue = app.state.queue = Queue(max_queue)
    app.state.fetch_images = fetch_images  # what the server was started with, for whoever inspects the app

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response(request_language(request))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return validation_error(exc).response(request_language(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """An unknown path or method: OpenAI's shape, not starlette's {"detail": ...}."""
        code = "not_found" if exc.status_code == 404 else None
        problem = message("api.no_such_route", method=request.method, path=request.url.path)
        return APIError(exc.status_code, problem, code=code, headers=exc.headers).response(request_language(request))

    @app.exception_handler(WorkbenchError)
    async def workbench_error(request: Request, exc: WorkbenchError):
        """A file at fault (a damaged adapter, a missing model folder): said, with a 4xx, never as a bug."""
        if isinstance(exc, ModelError):
            error = APIError(400, exc.message, code="model_unavailable", param="model")
        else:
            error = APIError(400, exc.message)
        return error.response(request_language(request))

    expected_key = f"Bearer {api_key}".encode() if api_key else None

    def check_key(request: Request) -> None:
        given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        if expected_key is not None and not hmac.compare_digest(given, expected_key):  # constant time
            raise APIError(401, message("api.wrong_key"), kind="authentication_error", code="invalid_api_key")

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def list_models():
        names = [base_name, *adapters()]
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "glm-workbench"} for name in names],
        }

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(request: Request):
        try:
            chat = ChatCompletionRequest.model_validate(await read_body(request, max_body_bytes))
        except ValidationError as exc:
            raise validation_error(exc) from None
        # images are decoded (and, switched on, fetched) off the event loop: other requests keep being answered
        system, turns = await run_in_threadpool(chat.conversation, allowed_images, fetch_images)
        if not engine.reads_images and any(turn.get("images") for turn in turns):
            raise APIError(400, message("api.model_reads_text", model=chat.model), param="messages")
        available = adapters()
        if chat.model not in (base_name, *available):
            raise APIError(
                404,
                message("api.unknown_model", model=chat.model, models=", ".join([base_name, *available])),
                code="model_not_found",
                param="model",
            )
        adapter = (chat.model, available[chat.model]) if chat.model != base_name else None
        tools = chat.tool_list()
        if not engine.takes_tools and (tools or any(t["role"] == "tool" for t in turns)):
            raise APIError(400, message("api.model_has_no_tools", model=chat.model), param="tools")
        prompt_tokens = engine.prompt_length(turns, system, tools, chat.enable_thinking, adapter)
        settings = GenerationSettings(
            max_new_tokens=fit_to_context(engine, prompt_tokens, chat.requested_tokens),
            temperature=chat.temperature,
            top_p=chat.top_p or 1.0,
            greedy=chat.temperature == 0,
            seed=chat.seed,
            enable_thinking=chat.enable_thinking,
        )
        leave = queue.enter()
        handed_over = False  # a stream gives its place up when it ends
        try:
            if adapter is not None:  # a damaged adapter is named now, as a 400, before the answer begins
                check_adapter_files(adapter[1])
            completion = Completion(engine, chat, turns, system, adapter, settings, prompt_tokens, leave, tools)
            if chat.stream:
                response = StreamingResponse(
                    completion.events(request), media_type="text/event-stream", background=BackgroundTask(leave)
                )
                handed_over = True
                return response
            return await completion.whole(request)
        finally:
            if not handed_over:
                leave()

    return app


def fit_to_context(engine: ChatEngine, prompt_tokens: int, requested: int | None) -> int:
    """How many tokens may be generated: what was asked, if prompt + that fits the model's context (else 400);
    without a request, the default capped at what the context leaves."""
    context = engine.context_length
    room = context - prompt_tokens
    if room < 1 or (requested is not None and requested > room):
        raise APIError(
            400,
            message("api.context_exceeded", context=context, prompt=prompt_tokens, requested=requested or 0),
            code="context_length_exceeded",
            param="messages",
        )
    return requested if requested is not None else min(DEFAULT_MAX_TOKENS, room)


class Completion:
    """One request's generation, stopped as soon as its client is gone."""

    def __init__(
        self,
        engine: ChatEngine,
        chat: ChatCompletionRequest,
        turns,
        system,
        adapter,
        settings,
        prompt_tokens: int,
        leave: Callable[[], None] = lambda: None,
        tools: list[dict[str, Any]] | None = None,
    ):
        self.tools = tools
        self.form = engine.reading(chat.enable_thinking)  # a GLM-4.5-generation or GLM-V model: taken apart (glm45)
        self.engine, self.chat, self.turns, self.system = engine, chat, turns, system
        self.adapter, self.settings, self.prompt_tokens = adapter, settings, prompt_tokens
        self.leave = leave  # the request's place in the queue, given up when the stream ends
        self.cancel = threading.Event()
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _replies(self) -> Iterator[str]:
        return self.engine.stream(
            self.turns, self.system, self.adapter, self.settings, cancel=self.cancel, tools=self.tools
        )

    async def whole(self, request: Request) -> dict:
        import anyio

        task = asyncio.ensure_future(anyio.to_thread.run_sync(self._complete))
        while not task.done():
            if await request.is_disconnected():
                self.cancel.set()  # nobody will read the answer: free the model for the next request
                break
            await asyncio.wait({task}, timeout=0.25)
        return await task

    def _complete(self) -> dict:
        reply, finish = "", "length"
        for reply in self._replies():
            reply, stopped = cut_at_stop(reply, self.chat.stops)
            if stopped:
                finish = "stop"
                break
        else:
            finish = "length" if self._count(reply) >= self.settings.max_new_tokens else "stop"
        completion_tokens = self._count(reply.strip()) if reply.strip() else 0
        answer: dict[str, Any] = {"role": "assistant", "content": reply.strip()}
        if self.form is not None:
            parsed = parse_reply(reply, self.form)
            answer = {"role": "assistant", "content": parsed.content or None, "reasoning_content": parsed.reasoning}
            if parsed.tool_calls:
                answer["tool_calls"] = self._tool_calls(parsed.tool_calls)
                finish = "tool_calls"
            elif answer["content"] is None:
                answer["content"] = ""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.chat.model,
            "choices": [{"index": 0, "message": answer, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens,
            },
        }

    def _tool_calls(self, calls: list[dict[str, Any]], delta: bool = False) -> list[dict[str, Any]]:
        """The model's calls as OpenAI's tool_calls (ids made here; arguments as JSON text)."""
        return [
            {
                **({"index": index} if delta else {}),
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)},
            }
            for index, call in enumerate(calls)
        ]

    def _visible(self, text: str) -> tuple[str, str]:
        """(reasoning, content) of a reply still being written, for streaming (core.chat.turns.visible_parts)."""
        reasoning, content = visible_parts(text, self.form.opens_thinking())
        return reasoning.lstrip("\n"), content.lstrip("\n")

    def _count(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text, add_special_tokens=False))

    def _chunk(self, delta: dict, finish: str | None = None) -> str:
        data = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.chat.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events(self, request: Request):
        """Server-sent events of chat.completion.chunk objects, then [DONE]; an error mid-stream is sent as an
        OpenAI error event before [DONE]. Generation stops when the client disconnects."""
        import anyio

        replies = self._replies()
        done = object()
        yield self._chunk({"role": "assistant", "content": ""})
        sent, finish = "", "stop"
        thought, whole = "", ""
        try:
            while True:
                if await request.is_disconnected():
                    return
                reply = await anyio.to_thread.run_sync(next, replies, done)
                if reply is done:
                    break
                whole = reply
                if self.form is not None:  # reasoning and content as separate deltas; tool calls at the end
                    reasoning, reply = self._visible(reply)
                    if len(reasoning) > len(thought):
                        yield self._chunk({"reasoning_content": reasoning[len(thought) :]})
                        thought = reasoning
                reply, stopped = cut_at_stop(reply.strip() if self.form is None else reply, self.chat.stops)
                if len(reply) > len(sent):
                    yield self._chunk({"content": reply[len(sent) :]})
                    sent = reply
                if stopped:
                    break
            if self.form is not None:
                calls = parse_reply(whole, self.form).tool_calls
                if calls:
                    yield self._chunk({"tool_calls": self._tool_calls(calls, delta=True)})
                    finish = "tool_calls"
        except Exception as exc:  # noqa: BLE001 - the client gets an error event, not a dropped connection
            from core.errors import describe

            error = {
                "error": {
                    "message": describe(exc, request_language(request)),
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            yield f"data: {json.dumps(error, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
            return
        finally:
            self.cancel.set()
            replies.close()
            self.leave()
        yield self._chunk({}, finish)
        yield "data: [DONE]\n\n"


class ApiServer:
    """The API on its own port in a background thread (the chat tab's "serve as API" switch)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8000):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="openai-api", daemon=True)
        self.host, self.port = host, port

    def start(self, timeout: float = 20) -> ApiServer:
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise WorkbenchError("api.cannot_start", host=self.host, port=self.port)
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

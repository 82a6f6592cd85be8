"""An OpenAI-compatible HTTP API over the chat engine: `/v1/models` and `/v1/chat/completions` (streaming too).

The `model` field names the base model or one of its adapters; adapters are switched on the one loaded base
(no reload). Requests are answered one at a time by the engine's lock, so two requests naming different
adapters never see each other's weights. Errors use OpenAI's JSON shape and status codes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from core.chat.engine import ChatEngine, GenerationSettings

AdapterResolver = Callable[[], dict[str, str]]  # adapter name -> folder, read at request time


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content={"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code}})


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    system: str
    settings: GenerationSettings
    stream: bool
    stop: list[str]


def parse_request(body: Any, known_models: list[str]) -> ChatRequest:
    """Validate an OpenAI chat request; raise APIError(400/404) naming the bad parameter."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required", param="model")
    if model not in known_models:
        raise APIError(404, f"The model '{model}' does not exist; available: {', '.join(known_models)}",
                       code="model_not_found", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    system, turns = "", []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant") \
                or not isinstance(message.get("content"), str):
            raise APIError(400, f"messages[{index}] must have a role (system, user or assistant) and text content",
                           param=f"messages[{index}]")
        if message["role"] == "system":
            system = message["content"]
        else:
            turns.append({"role": message["role"], "content": message["content"]})
    if not turns or turns[-1]["role"] != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 512))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise APIError(400, "'max_tokens' must be a positive integer", param="max_tokens")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise APIError(400, "'stop' must be a string or a list of strings", param="stop")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise APIError(400, "'seed' must be an integer", param="seed")
    settings = GenerationSettings(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p or 1.0,
                                  greedy=temperature == 0, seed=seed)
    return ChatRequest(model, turns, system, settings, bool(body.get("stream", False)), stop)


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise APIError(400, f"'{key}' must be a number from {low:g} to {high:g}", param=key)
    return float(value)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    positions = [text.find(s) for s in stops if s and s in text]
    return (text[:min(positions)], True) if positions else (text, False)


def create_api(engine: ChatEngine, base_name: str, adapters: AdapterResolver, api_key: str | None = None) -> FastAPI:
    """The FastAPI app. `engine` must already hold the base model; `adapters()` lists what may be named."""
    app = FastAPI(title="GLM Workbench OpenAI-compatible API")

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):  # noqa: ARG001 - FastAPI's signature
        return exc.response()

    def check_key(request: Request) -> None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                           kind="authentication_error", code="invalid_api_key")

    @app.get("/v1/models")
    def list_models(request: Request):
        check_key(request)
        names = [base_name, *adapters()]
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                             "owned_by": "glm-workbench"} for name in names]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise APIError(400, "the request body is not valid JSON") from None
        available = adapters()
        chat = parse_request(body, [base_name, *available])
        adapter = (chat.model, available[chat.model]) if chat.model != base_name else None
        prompt_tokens = len(engine.encoder.encode_prompt(chat.messages, chat.system))
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if chat.stream:
            return StreamingResponse(_stream(engine, chat, adapter, completion_id), media_type="text/event-stream")
        return await _in_thread(lambda: _complete(engine, chat, adapter, completion_id, prompt_tokens))

    return app


async def _in_thread(function):
    import anyio

    return await anyio.to_thread.run_sync(function)


def _complete(engine: ChatEngine, chat: ChatRequest, adapter, completion_id: str, prompt_tokens: int) -> dict:
    reply, finish = "", "length"
    for reply in engine.stream(chat.messages, chat.system, adapter, chat.settings):
        reply, stopped = cut_at_stop(reply, chat.stop)
        if stopped:
            finish = "stop"
            break
    else:
        finish = "length" if len(engine.tokenizer.encode(reply, add_special_tokens=False)) >= \
            chat.settings.max_new_tokens else "stop"
    reply = reply.strip()
    completion_tokens = len(engine.tokenizer.encode(reply, add_special_tokens=False)) if reply else 0
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": chat.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def _stream(engine: ChatEngine, chat: ChatRequest, adapter, completion_id: str) -> Iterator[str]:
    """Server-sent events of chat.completion.chunk objects, then [DONE]. Runs in Starlette's thread pool."""
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> str:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": chat.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    sent, finish = "", "stop"
    for reply in engine.stream(chat.messages, chat.system, adapter, chat.settings):
        reply, stopped = cut_at_stop(reply.strip(), chat.stop)
        if len(reply) > len(sent):
            yield chunk({"content": reply[len(sent):]})
            sent = reply
        if stopped:
            break
    yield chunk({}, finish)
    yield "data: [DONE]\n\n"


class ApiServer:
    """The API on its own port in a background thread (the chat tab's "serve as API" switch)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8000):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="openai-api", daemon=True)
        self.host, self.port = host, port

    def start(self, timeout: float = 20) -> "ApiServer":
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError(f"the API server could not start on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

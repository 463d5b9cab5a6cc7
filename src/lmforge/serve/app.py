"""The OpenAI-compatible HTTP app (FastAPI) over the batching engine.

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (plain or SSE streaming),
POST /tokenize, GET /metrics (Prometheus), GET /health. With api_keys, every route but /health needs
`Authorization: Bearer KEY` (a load balancer probes /health without secrets; it reveals nothing).
Every error, including an unexpected one (500), uses OpenAI's shape {"error": {"message", "type", "param",
"code"}} and is counted in /metrics. Prompts are rendered and tokenized in a worker thread, so one large prompt
cannot stall the event loop (health checks, other streams); bodies and prompt characters are capped.

create_app builds the app over an AppState (the engine, served names, encoders, metrics and limits, kept as
`app.state.serving`); the routes and the streaming paths are the module functions below, each reading that state.
Loading models and running uvicorn is lmforge.serve.launch's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.types import Message

from lmforge.errors import UserInputError
from lmforge.generate.load import LoadedModel
from lmforge.serve.embed import Embedder
from lmforge.serve.engine import Engine, EngineDeadError, Event, QueueFullError, Request
from lmforge.serve.metrics import Metrics
from lmforge.serve.protocol import (
    DEFAULT_MAX_TOKENS,
    MAX_EMBEDDING_INPUTS,
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    TokenizeRequest,
    chat_logprobs,
    chat_messages,
    completion_logprobs,
    new_id,
    now_s,
    reject_lone_surrogates,
    usage,
)
from lmforge.serve.tools import ToolPlan, parse_tool_calls, plan_tools, render_with_tools

RETRY_AFTER_S = 1
ROUTES = frozenset(
    {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/tokenize"}
)
DISCONNECT_POLL_S = 0.5
# Request bodies beyond this are refused with 413 before they are read whole (a 10 MB chat once held the event
# loop for 9 s and left 1.8 GB behind). 8 MiB holds a 128k-token context as text or token ids several times over.
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
# Default prompt-character cap per model: this many characters per token of its context. English runs ~4
# characters per token, so only prompts that could never fit are refused before tokenization.
DEFAULT_PROMPT_CHARS_PER_CONTEXT_TOKEN = 32
log = logging.getLogger("lmforge.serve")


@dataclass
class _Choice:
    """What one sequence produced so far."""

    text: str = ""
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class _Waker:
    """Wakes the event loop for the bridges that received events, with one cross-thread call for all of them: the
    engine reports every running row each step, and a self-pipe write and a loop callback per request and step was a
    measurable share of the tiny model's serving time (the engine thread waits on the GIL meanwhile)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[_Bridge] = []

    def wake(self, bridge: _Bridge) -> None:  # engine thread
        with self._lock:
            self._pending.append(bridge)
            if len(self._pending) > 1:  # a wake-up is already scheduled and will see this bridge too
                return
        self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:  # event loop
        with self._lock:
            pending, self._pending = self._pending, []
        for bridge in pending:
            bridge.woken()


class _Bridge:
    """Events from the engine thread to one HTTP request's coroutine. The loop is woken at most once per batch of
    events (not once per token), and the coroutine takes everything that arrived since it last looked."""

    def __init__(self, waker: _Waker):
        self._waker = waker
        self._items: list[tuple[int, Event]] = []
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self._wake_pending = False

    def push(self, index: int, event: Event) -> None:  # engine thread
        with self._lock:
            self._items.append((index, event))
            if self._wake_pending:
                return
            self._wake_pending = True
        self._waker.wake(self)

    def woken(self) -> None:  # event loop
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    async def get_all(self) -> list[tuple[int, Event]]:
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                self._ready.clear()
            await self._ready.wait()


class _BodyTooLarge(HTTPException):
    """Raised from the body reader once the bytes received pass the cap (a body sent without Content-Length, or
    longer than it said). An HTTPException, so FastAPI's body parsing re-raises it instead of turning it into
    "error parsing the body". (FastAPI >= 0.165 has max_body_size, but answers an oversized Content-Length in plain
    text, and lmforge supports older FastAPI.)"""

    def __init__(self, max_body_bytes: int):
        super().__init__(
            413, f"the request body exceeds the server's limit of {max_body_bytes} bytes (--max-body-bytes)"
        )


class _Gate:
    """Plain ASGI middleware around every route (FastAPI's @app.middleware wraps every streamed chunk in an extra
    task hop, a measurable cost per token): the bearer-key check, the body-size cap, per-route request counts, and
    the last resort for an unexpected exception, which becomes an OpenAI-shaped 500 instead of a plain-text one
    and a dropped keep-alive connection."""

    def __init__(self, app: Any, *, api_keys: list[str], metrics: Metrics, max_body_bytes: int):
        self.app, self.api_keys, self.metrics, self.max_body_bytes = app, api_keys, metrics, max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values for Prometheus
        if path == "other" and scope["path"].startswith("/v1/models/"):
            path = "/v1/models/{model}"
        started = False

        async def counted_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.record_request(path, message["status"])
            await send(message)

        async def answer(error: ApiError) -> None:
            from starlette.responses import JSONResponse

            await JSONResponse(error.body(), status_code=error.status, headers=error.headers)(
                scope, receive, counted_send
            )

        headers = dict(scope["headers"])
        if self.api_keys and path != "/health" and scope["method"] != "OPTIONS":
            header = headers.get(b"authorization", b"").decode("latin-1")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(given.encode(), key.encode()) for key in self.api_keys):
                await answer(
                    ApiError(
                        401,
                        "missing or wrong API key: send 'Authorization: Bearer KEY'",
                        type="authentication_error",
                        code="invalid_api_key",
                    )
                )
                return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await answer(_api_error(_BodyTooLarge(self.max_body_bytes)))
            return
        received = 0

        async def capped_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        try:
            await self.app(scope, capped_receive, counted_send)
        except Exception as error:
            if started:
                raise
            if isinstance(error, HTTPException):
                await answer(_api_error(error))
                return
            log.exception("unexpected error on %s", scope["path"])
            await answer(
                ApiError(
                    500, f"internal error: {type(error).__name__}: {error}", type="server_error", code="internal_error"
                )
            )


def _api_error(error: HTTPException) -> ApiError:
    """Starlette's HTTP errors (404 route, 405 method, 413 body) in OpenAI's shape."""
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    code = "request_too_large" if error.status_code == 413 else None
    return ApiError(error.status_code, str(error.detail), type=kind, code=code, headers=dict(error.headers or {}))


class _Pending:
    """Text per choice waiting to go out as one chunk."""

    def __init__(self, make_chunk: Any):
        self._make_chunk = make_chunk
        self._text: dict[int, str] = {}

    def add(self, index: int, text: str) -> None:
        self._text[index] = self._text.get(index, "") + text

    def flush(self, index: int) -> list[str]:
        text = self._text.pop(index, "")
        return [self._make_chunk(index, text)] if text else []

    def flush_all(self) -> list[str]:
        return [chunk for index in sorted(self._text) for chunk in self.flush(index)]


@dataclass
class AppState:
    """What every route reads (kept on the app as `app.state.serving`): the engine and the names it serves, the
    encoders for /v1/embeddings, the metrics, and the per-request limits."""

    engine: Engine
    public: dict[str, str]  # served name -> the engine's key for that model
    encoders: dict[str, Embedder]
    metrics: Metrics
    request_timeout_s: float | None
    max_prompt_chars: int | None
    wakers: dict[asyncio.AbstractEventLoop, _Waker] = field(default_factory=dict)  # one per event loop (normally one)

    def known(self, model: str | None) -> str:
        """The served name `model` asks for (None: the first), or a 404 naming what exists."""
        if model is None:
            return next(iter(self.public), None) or next(iter(self.encoders))
        if model in self.public or model in self.encoders:
            return model
        raise ApiError(
            404,
            f"the model {model!r} does not exist here; available: {', '.join([*self.public, *self.encoders])}",
            type="not_found_error",
            param="model",
            code="model_not_found",
        )

    def resolve(self, model: str | None) -> tuple[str, LoadedModel]:
        """A generative model by served name (an embedding model here is a 400, as vLLM answers)."""
        name = self.known(model)
        if name not in self.public:
            raise ApiError(400, f"the model {name!r} is an embedding model: use /v1/embeddings", param="model")
        return name, self.engine.models[self.public[name]]

    def resolve_encoder(self, model: str | None) -> tuple[str, Embedder]:
        name = self.known(model) if model is not None else next(iter(self.encoders), None) or self.known(None)
        if name not in self.encoders:
            raise ApiError(
                400,
                f"the model {name!r} generates text and cannot embed: serve an encoder "
                "(a sentence-transformers folder) for /v1/embeddings",
                param="model",
            )
        return name, self.encoders[name]

    def check_chars(self, count: int, context_tokens: int, param: str, what: str = "prompt") -> None:
        """At most --max-prompt-chars characters (default: 32 per token of the model's context), checked before
        any tokenizing."""
        limit = self.max_prompt_chars or DEFAULT_PROMPT_CHARS_PER_CONTEXT_TOKEN * context_tokens
        if count > limit:
            raise ApiError(
                400,
                f"the {what} has {count} characters; this server takes at most {limit} characters "
                "per request (--max-prompt-chars)",
                param=param,
                code="prompt_too_long",
            )

    def check_fanout(self, prompts: int, n: int) -> None:
        """A request needing more sequences than the queue holds can never be queued: 400, since a retry (what a
        429 asks for) cannot help."""
        if prompts * n > self.engine.max_queue:
            raise ApiError(
                400,
                f"this request needs {prompts * n} sequences ({prompts} prompt(s) x n={n}), more "
                f"than the {self.engine.max_queue} the server queues (--max-queue); send fewer "
                "prompts or a smaller n",
                param="n",
            )

    def model_card(self, name: str) -> dict[str, Any]:
        card = {"id": name, "object": "model", "created": now_s(), "owned_by": "lmforge"}
        if name in self.encoders:
            encoder = self.encoders[name]
            return {**card, "max_model_len": encoder.max_tokens, "dimensions": encoder.dimensions}
        loaded = self.engine.models[self.public[name]]
        # chat_template "default": the model has none and chats are rendered as ChatML (docs/serve.md)
        return {**card, "max_model_len": loaded.context_length, "chat_template": loaded.chat_template_source}

    def build_requests(
        self,
        body: Any,
        key: str,
        loaded: LoadedModel,
        prompts: list[list[int]],
        logprobs: int | None,
        prompt_param: str,
        max_tokens: int | None,
    ) -> list[Request]:
        out = []
        for prompt_ids in prompts:
            params = sampling_for(body, loaded, len(prompt_ids), prompt_param, max_tokens)
            for i in range(body.n):
                # choice i samples with seed + i (an int64 seed + i < 2**64 stays in torch's range)
                seed = params.seed + i if params.seed is not None else None
                out.append(
                    Request(
                        key,
                        prompt_ids,
                        params.model_copy(update={"seed": seed}),
                        lambda _: None,
                        logprobs=logprobs,
                        timeout_s=self.request_timeout_s,
                        ignore_eos=body.ignore_eos,
                    )
                )
        return out

    def submit(self, requests: list[Request]) -> _Bridge:
        """Hand every request to the engine; their events arrive on one bridge as (index, Event)."""
        loop = asyncio.get_running_loop()
        if loop not in self.wakers:
            self.wakers[loop] = _Waker(loop)
        bridge = _Bridge(self.wakers[loop])
        for index, request in enumerate(requests):
            request.on_event = functools.partial(bridge.push, index)
            try:
                self.engine.submit(request)
            except (QueueFullError, EngineDeadError) as error:
                for earlier in requests[:index]:
                    earlier.cancel()
                if isinstance(error, EngineDeadError):
                    raise ApiError(503, str(error), type="server_error", code="engine_dead") from None
                raise ApiError(
                    429,
                    str(error),
                    type="rate_limit_error",
                    code="queue_full",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
        return bridge

    def finish_error(self, choice: _Choice) -> ApiError | None:
        """The error a choice ended with, in OpenAI's shape (a plain reply's status, a stream's error event)."""
        if choice.finish_reason == "timeout":
            return ApiError(
                504,
                f"{choice.error}; the limit is {self.request_timeout_s} s (--timeout)",
                type="timeout_error",
                code="timeout",
            )
        if choice.finish_reason == "error":
            return ApiError(500, choice.error or "generation failed", type="server_error", code="internal_error")
        return None

    def record(self, choices: list[_Choice], started: float, first: float | None) -> None:
        self.metrics.record_generation(
            sum(c.prompt_tokens for c in choices),
            sum(c.completion_tokens for c in choices),
            time.perf_counter() - started,
            first - started if first else None,
        )


def create_app(
    engine: Engine,
    *,
    api_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    served_model_name: str | None = None,
    max_queue: int | None = None,
    request_timeout_s: float | None = 600.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_prompt_chars: int | None = None,
    embedders: Mapping[str, Embedder] | None = None,
) -> Any:
    """The FastAPI app serving `engine`'s models, and `embedders` (encoders, by name) on /v1/embeddings.
    `served_model_name` renames the first (base) model. The engine thread starts and stops with the app.

    `max_body_bytes` caps a request body (413 beyond it); `max_prompt_chars` caps the characters of a request's
    prompts or message contents (400 beyond it; default: 32 per token of the model's context length), both
    checked before any tokenization."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware

    keys = check_api_keys(api_keys)
    if max_body_bytes < 1 or (max_prompt_chars is not None and max_prompt_chars < 1):
        raise UserInputError("--max-body-bytes and --max-prompt-chars must be >= 1")
    if max_queue is not None:
        engine.max_queue = max_queue
    public = {
        (served_model_name if served_model_name and index == 0 else key): key for index, key in enumerate(engine.models)
    }
    encoders = dict(embedders or {})
    if not public and not encoders:
        raise UserInputError("nothing to serve: the engine holds no model and no embedding model was given")
    state = AppState(engine, public, encoders, Metrics(), request_timeout_s, max_prompt_chars)

    app = FastAPI(title="lmforge", lifespan=_lifespan)
    app.state.serving = state
    app.add_middleware(_Gate, api_keys=keys, metrics=state.metrics, max_body_bytes=max_body_bytes)
    if cors_origins:  # added last, so outermost: preflights and 401s carry the CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"])
    app.exception_handler(ApiError)(api_error)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(HTTPException)(http_error)
    for method, path, endpoint in _ENDPOINTS:
        app.add_api_route(path, endpoint, methods=[method])
    return app


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    engine = app.state.serving.engine
    engine.start()
    yield
    # uvicorn has already let in-flight requests finish; the engine drains whatever is left.
    await asyncio.to_thread(engine.stop)


def _state(http: HttpRequest) -> AppState:
    return http.app.state.serving


async def api_error(_: HttpRequest, error: ApiError) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def invalid_request(_: HttpRequest, error: Any) -> Any:
    """FastAPI's RequestValidationError as OpenAI's 400, `param` naming the first field at fault."""
    from starlette.responses import JSONResponse

    problems = error.errors()
    first = problems[0] if problems else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        message, param = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}", None
    else:
        message = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'] if p != 'body') or 'the request body'}: "
            f"{item['msg'].removeprefix('Value error, ')}"
            for item in problems
        )
        param = ".".join(loc) or None
    return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)


async def http_error(_: HttpRequest, error: HTTPException) -> Any:
    from starlette.responses import JSONResponse

    api = _api_error(error)
    return JSONResponse(api.body(), status_code=api.status, headers=api.headers)


async def health(http: HttpRequest) -> Any:
    engine = _state(http).engine
    if not engine.alive:
        from starlette.responses import JSONResponse

        error = ApiError(
            503,
            f"the engine has stopped after an internal error ({engine.failure}); the server must be restarted",
            type="server_error",
            code="engine_dead",
        )
        return JSONResponse(error.body(), status_code=503)
    return {"status": "ok", "running": engine.running, "waiting": engine.queue_depth}


async def prometheus(http: HttpRequest) -> Any:
    from starlette.responses import PlainTextResponse

    state = _state(http)
    return PlainTextResponse(state.metrics.render(state.engine), media_type="text/plain; version=0.0.4")


async def models(http: HttpRequest) -> dict[str, Any]:
    state = _state(http)
    return {"object": "list", "data": [state.model_card(name) for name in [*state.public, *state.encoders]]}


async def model(model_id: str, http: HttpRequest) -> dict[str, Any]:
    state = _state(http)
    return state.model_card(state.known(model_id))


async def embeddings(body: EmbeddingRequest, http: HttpRequest) -> dict[str, Any]:
    state = _state(http)
    name, encoder = state.resolve_encoder(body.model)
    reject_lone_surrogates(body.input, "input")
    inputs = completion_prompts(body.input, param="input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise ApiError(400, f"at most {MAX_EMBEDDING_INPUTS} inputs per request (got {len(inputs)})", param="input")
    if body.dimensions is not None and body.dimensions != encoder.dimensions:
        raise ApiError(
            400,
            f"dimensions {body.dimensions}: this model gives {encoder.dimensions}-dimensional "
            "vectors and was not trained to be shortened (Matryoshka)",
            param="dimensions",
        )
    state.check_chars(
        sum(len(text) for text in inputs if isinstance(text, str)), encoder.max_tokens, "input", what="input"
    )
    vectors, tokens = await asyncio.to_thread(embed_inputs, encoder, inputs)
    return {
        "object": "list",
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "data": [
            {
                "object": "embedding",
                "index": index,
                "embedding": vector_base64(vector) if body.encoding_format == "base64" else vector,
            }
            for index, vector in enumerate(vectors)
        ],
    }


async def tokenize(body: TokenizeRequest, http: HttpRequest) -> dict[str, Any]:
    state = _state(http)
    _, loaded = state.resolve(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise ApiError(400, "give exactly one of prompt or messages", param="prompt")
    if body.messages is not None:
        reject_lone_surrogates(body.messages, "messages")
        messages = chat_messages(body.messages)
        state.check_chars(sum(len(m["content"]) for m in messages), loaded.context_length, "messages")
        ids = await asyncio.to_thread(chat_prompt_ids, loaded, messages, ToolPlan(None, "", False))
    else:
        reject_lone_surrogates(body.prompt, "prompt")
        state.check_chars(len(body.prompt or ""), loaded.context_length, "prompt")
        ids = await asyncio.to_thread(encode, loaded, body.prompt or "", body.add_special_tokens)
    return {"tokens": ids, "count": len(ids), "max_model_len": loaded.context_length}


async def chat_completions(body: ChatCompletionRequest, http: HttpRequest) -> Any:
    from starlette.responses import StreamingResponse

    state = _state(http)
    name, loaded = state.resolve(body.model)
    for param in ("messages", "tools", "tool_choice", "stop"):
        reject_lone_surrogates(getattr(body, param), param)
    check_response_format(body)
    messages = chat_messages(body.messages)
    state.check_chars(sum(len(m["content"]) for m in messages), loaded.context_length, "messages")
    state.check_fanout(1, body.n)
    tools = plan_tools(body.tools, body.tool_choice)
    prompt_ids = await asyncio.to_thread(chat_prompt_ids, loaded, messages, tools)
    top = (body.top_logprobs or 0) if body.logprobs else None
    requests = state.build_requests(
        body, state.public[name], loaded, [prompt_ids], top, "messages", body.max_completion_tokens or body.max_tokens
    )
    started = time.perf_counter()
    if body.stream:
        return StreamingResponse(
            guarded(stream_chat(state, body, name, requests, state.submit(requests), tools, started)),
            media_type="text/event-stream",
        )
    choices = await collect(state, requests, state.submit(requests), started, http)
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now_s(),
        "model": name,
        "choices": [chat_choice(index, choice, tools, body.logprobs) for index, choice in enumerate(choices)],
        "usage": usage(choices[0].prompt_tokens, sum(c.completion_tokens for c in choices)),
    }


async def completions(body: CompletionRequest, http: HttpRequest) -> Any:
    from starlette.responses import StreamingResponse

    state = _state(http)
    name, loaded = state.resolve(body.model)
    for param in ("prompt", "stop", "suffix"):
        reject_lone_surrogates(getattr(body, param), param)
    check_response_format(body)
    check_completion_options(body)
    prompts = completion_prompts(body.prompt)
    state.check_fanout(len(prompts), body.n)
    state.check_chars(sum(len(p) for p in prompts if isinstance(p, str)), loaded.context_length, "prompt")
    prompt_ids = await asyncio.to_thread(completion_prompt_ids, loaded, prompts)
    requests = state.build_requests(
        body, state.public[name], loaded, prompt_ids, body.logprobs, "prompt", body.max_tokens
    )
    echoes = (
        [p if isinstance(p, str) else loaded.tokenizer.decode(p) for p in prompts for _ in range(body.n)]
        if body.echo
        else None
    )
    started = time.perf_counter()
    if body.stream:
        return StreamingResponse(
            guarded(stream_completion(state, body, name, requests, state.submit(requests), started, echoes)),
            media_type="text/event-stream",
        )
    choices = await collect(state, requests, state.submit(requests), started, http)
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now_s(),
        "model": name,
        "choices": [
            {
                "index": index,
                "text": (echoes[index] if echoes else "") + choice.text,
                "finish_reason": choice.finish_reason,
                "logprobs": completion_logprobs(choice.logprobs) if body.logprobs is not None else None,
            }
            for index, choice in enumerate(choices)
        ],
        "usage": usage(sum(len(r.prompt_ids) for r in requests[:: body.n]), sum(c.completion_tokens for c in choices)),
    }


# The routes, in matching order (/v1/models before /v1/models/{id}).
_ENDPOINTS = (
    ("GET", "/health", health),
    ("GET", "/metrics", prometheus),
    ("GET", "/v1/models", models),
    ("GET", "/v1/models/{model_id:path}", model),
    ("POST", "/v1/embeddings", embeddings),
    ("POST", "/tokenize", tokenize),
    ("POST", "/v1/chat/completions", chat_completions),
    ("POST", "/v1/completions", completions),
)


async def collect(
    state: AppState, requests: list[Request], bridge: _Bridge, started: float, http: HttpRequest
) -> list[_Choice]:
    """Wait for every choice to finish; a client that hangs up meanwhile cancels them (checked twice a second)."""
    choices = [_Choice() for _ in requests]
    first: float | None = None
    next_check = time.monotonic() + DISCONNECT_POLL_S
    try:
        while any(c.finish_reason is None for c in choices):
            try:
                events = await asyncio.wait_for(bridge.get_all(), DISCONNECT_POLL_S)
            except TimeoutError:
                events = []
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + DISCONNECT_POLL_S
                if await http.is_disconnected():
                    raise ApiError(499, "the client closed the request", code="client_closed")
            for index, event in events:
                first = first or time.perf_counter()
                absorb(choices[index], event)
    finally:
        for request in requests:
            request.cancel()
    state.record(choices, started, first)
    for choice in choices:
        error = state.finish_error(choice)
        if error is not None:
            raise error
    return choices


async def stream_chat(
    state: AppState,
    body: ChatCompletionRequest,
    name: str,
    requests: list[Request],
    bridge: _Bridge,
    tools: ToolPlan,
    started: float,
) -> AsyncGenerator[str, None]:
    ident, created = new_id("chatcmpl"), now_s()

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        return sse(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
            }
        )

    choices = [_Choice() for _ in requests]
    # With tools, text that may be the start of a tool call is held until the reply shows what it is.
    held = ["" for _ in requests]
    undecided = [tools.parse for _ in requests]
    first: float | None = None
    try:
        yield "".join(chunk(index, {"role": "assistant", "content": ""}) for index in range(len(requests)))
        while any(c.finish_reason is None for c in choices):
            # Everything that arrived since the last wake-up goes out in one write, each choice's new text
            # in one chunk (tokens with logprobs keep a chunk each): less work when the loop falls behind.
            out: list[str] = []
            pending = _Pending(lambda i, text: chunk(i, {"content": text}))
            for index, event in await bridge.get_all():
                first = first or time.perf_counter()
                choice = choices[index]
                absorb(choice, event)
                error = state.finish_error(choice)
                if error is not None:
                    yield "".join([*out, *pending.flush_all(), sse(error.body()), "data: [DONE]\n\n"])
                    return
                logprobs = chat_logprobs([event.logprob]) if body.logprobs and event.logprob else None
                text = event.text
                if undecided[index]:
                    held[index] += text
                    text = ""
                    if not tools.prefill and not might_be_tool_call(held[index]):
                        undecided[index], text, held[index] = False, held[index], ""
                if logprobs:
                    out += [*pending.flush(index), chunk(index, {"content": text}, logprobs=logprobs)]
                elif text:
                    pending.add(index, text)
                if choice.finish_reason is not None:
                    out += pending.flush(index)
                    if undecided[index]:
                        _, calls = parse_tool_calls(tools.prefill + held[index])
                        if calls:
                            out.append(
                                chunk(index, {"tool_calls": [{"index": k, **call} for k, call in enumerate(calls)]})
                            )
                            choice.finish_reason = "tool_calls"
                        elif held[index]:
                            out.append(chunk(index, {"content": held[index]}))
                    out.append(chunk(index, {}, finish=choice.finish_reason))
            yield "".join(out + pending.flush_all())
        state.record(choices, started, first)
        if body.include_usage:
            yield sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": name,
                    "choices": [],
                    "usage": usage(choices[0].prompt_tokens, sum(c.completion_tokens for c in choices)),
                }
            )
        yield "data: [DONE]\n\n"
    finally:  # a client that went away (the generator is closed or cancelled) stops its generation
        for request in requests:
            request.cancel()


async def stream_completion(
    state: AppState,
    body: CompletionRequest,
    name: str,
    requests: list[Request],
    bridge: _Bridge,
    started: float,
    echoes: list[str] | None,
) -> AsyncGenerator[str, None]:
    ident, created = new_id("cmpl"), now_s()

    def chunk(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> str:
        return sse(
            {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": name,
                "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
            }
        )

    choices = [_Choice() for _ in requests]
    first: float | None = None
    try:
        if echoes:
            yield "".join(chunk(index, text) for index, text in enumerate(echoes))
        while any(c.finish_reason is None for c in choices):
            out: list[str] = []
            pending = _Pending(lambda i, text: chunk(i, text))
            for index, event in await bridge.get_all():
                first = first or time.perf_counter()
                absorb(choices[index], event)
                error = state.finish_error(choices[index])
                if error is not None:
                    yield "".join([*out, *pending.flush_all(), sse(error.body()), "data: [DONE]\n\n"])
                    return
                reason = choices[index].finish_reason
                logprobs = completion_logprobs([event.logprob]) if event.logprob and body.logprobs is not None else None
                if logprobs:
                    out += [*pending.flush(index), chunk(index, event.text, logprobs=logprobs)]
                elif event.text:
                    pending.add(index, event.text)
                if reason is not None:
                    out += [*pending.flush(index), chunk(index, "", finish=reason)]
            yield "".join(out + pending.flush_all())
        state.record(choices, started, first)
        if body.include_usage:
            yield sse(
                {
                    "id": ident,
                    "object": "text_completion",
                    "created": created,
                    "model": name,
                    "choices": [],
                    "usage": usage(
                        sum(len(r.prompt_ids) for r in requests[:: body.n]), sum(c.completion_tokens for c in choices)
                    ),
                }
            )
        yield "data: [DONE]\n\n"
    finally:
        for request in requests:
            request.cancel()


async def guarded(stream: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """`stream`, ending with an OpenAI-shaped error event and [DONE] if it fails unexpectedly (its status line has
    long been sent, so a 500 is no longer possible); closing this closes `stream`, which cancels its requests."""
    async with contextlib.aclosing(stream):
        try:
            async for piece in stream:
                yield piece
        except Exception as error:
            log.exception("unexpected error while streaming")
            yield sse(
                ApiError(
                    500, f"internal error: {type(error).__name__}: {error}", type="server_error", code="internal_error"
                ).body()
            )
            yield "data: [DONE]\n\n"


def check_api_keys(api_keys: Sequence[str]) -> list[str]:
    """The keys, refusing an empty one: `--api-key ''` (or an empty LMFORGE_API_KEY) once started an open server
    that also took `Authorization: Bearer ` with nothing after it."""
    if any(not key.strip() for key in api_keys):
        raise UserInputError(
            "an API key is empty (--api-key '' or an empty LMFORGE_API_KEY); give a real key, or "
            "leave the option and the variable unset for a server without keys"
        )
    return list(api_keys)


def check_response_format(body: Any) -> None:
    """Only plain text: there is no constrained decoding here, so JSON mode would be a promise nothing keeps."""
    if body.response_format is not None and body.response_format.type != "text":
        raise ApiError(
            400,
            f"response_format {body.response_format.type!r} is not supported: lmforge's engine has no "
            "constrained decoding (only 'text'); ask for JSON in the prompt, or serve with --engine "
            "vllm",
            param="response_format.type",
        )


def check_completion_options(body: CompletionRequest) -> None:
    """Completions options this server does not implement are refused, not ignored (as vLLM refuses suffix)."""
    if body.suffix:
        raise ApiError(
            400, "suffix is not supported (fill-in-the-middle needs a model-specific prompt)", param="suffix"
        )
    if body.best_of is not None and body.best_of != body.n:
        raise ApiError(
            400, "best_of other than n is not supported (no server-side ranking of choices)", param="best_of"
        )
    if body.echo and body.logprobs is not None:
        raise ApiError(
            400, "echo with logprobs needs the prompt's logprobs, which this server does not compute", param="echo"
        )


def chat_prompt_ids(loaded: LoadedModel, messages: list[dict[str, Any]], tools: ToolPlan) -> list[int]:
    """The token ids of a chat (run in a worker thread: a long one must not stall the event loop)."""
    try:
        text = render_with_tools(loaded, messages, tools.tools)
    except Exception as error:  # jinja raises its own errors (a template that rejects a role order)
        raise ApiError(400, f"the chat template cannot render these messages: {error}", param="messages") from None
    return encode(loaded, text + tools.prefill, False)


def encode(loaded: LoadedModel, text: str, add_special_tokens: bool) -> list[int]:
    return loaded.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]


def completion_prompts(
    prompt: str | list[str] | list[int] | list[list[int]], param: str = "prompt"
) -> list[str | list[int]]:
    """The prompts of a completions (or embeddings) request, each a string or a list of token ids (OpenAI's four
    forms)."""
    prompts: list[Any] = [prompt] if isinstance(prompt, str) else list(prompt)
    if prompts and all(isinstance(p, int) for p in prompts):
        prompts = [prompts]
    if not prompts or any(not p for p in prompts):
        raise ApiError(400, f"{param} must not be empty", param=param)
    return prompts


def embed_inputs(encoder: Embedder, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
    """Vectors for `inputs` and the tokens they took (run in a worker thread). Texts get the model's special
    tokens, given token ids are taken as they are; either beyond the model's length is a 400, not truncated."""
    texts = [text for text in inputs if isinstance(text, str)]
    encoded = iter(encoder.token_ids(texts) if texts else [])
    ids = [next(encoded) if isinstance(item, str) else list(item) for item in inputs]
    vocabulary = len(encoder.tokenizer)
    for index, tokens in enumerate(ids):
        if len(tokens) > encoder.max_tokens:
            raise ApiError(
                400,
                f"input[{index}] has {len(tokens)} tokens; this model reads at most {encoder.max_tokens}",
                param="input",
                code="context_length_exceeded",
            )
        if not isinstance(inputs[index], str) and any(not 0 <= token < vocabulary for token in tokens):
            raise ApiError(400, f"input token ids must be in [0, {vocabulary})", param="input")
    return encoder.embed(ids), sum(len(tokens) for tokens in ids)


def vector_base64(vector: list[float]) -> str:
    """OpenAI's encoding_format "base64": the little-endian float32 bytes (what the openai client asks for by
    default and decodes with numpy.frombuffer(..., dtype="float32"))."""
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def completion_prompt_ids(loaded: LoadedModel, prompts: list[str | list[int]]) -> list[list[int]]:
    """Token ids per prompt (run in a worker thread); given ids must exist in the vocabulary."""
    out = []
    for prompt in prompts:
        if isinstance(prompt, str):
            ids = encode(loaded, prompt, True)
            if not ids:
                raise ApiError(400, "prompt must not be empty", param="prompt")
        else:
            vocabulary = len(loaded.tokenizer)
            if any(not 0 <= token < vocabulary for token in prompt):
                raise ApiError(400, f"prompt token ids must be in [0, {vocabulary})", param="prompt")
            ids = list(prompt)
        out.append(ids)
    return out


def sampling_for(body: Any, loaded: LoadedModel, prompt_tokens: int, prompt_param: str, max_tokens: int | None) -> Any:
    """Validated SamplingParams for a request, with the context check naming both numbers."""
    from pydantic import ValidationError

    from lmforge.generate.sampling import SamplingParams, describe_errors

    context = loaded.context_length
    if max_tokens is not None and prompt_tokens + max_tokens > context:
        raise ApiError(
            400,
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
            f"context length of {context} tokens; shorten the prompt or lower max_tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    if max_tokens is None:
        if prompt_tokens >= context:
            raise ApiError(
                400,
                f"the prompt ({prompt_tokens} tokens) fills the model's context length of {context} tokens; shorten it",
                param=prompt_param,
                code="context_length_exceeded",
            )
        max_tokens = min(DEFAULT_MAX_TOKENS, context - prompt_tokens)
    try:
        return SamplingParams(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=max(body.top_k, 0),  # -1: off
            min_p=body.min_p,
            repetition_penalty=body.repetition_penalty,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            max_new_tokens=max_tokens,
            stop=body.stops,
            seed=body.seed,
        )
    except ValidationError as error:
        field_name = str(error.errors()[0]["loc"][0]) if error.errors() else None
        param = {"max_new_tokens": "max_tokens"}.get(field_name or "", field_name)
        raise ApiError(
            400, "; ".join(describe_errors(error)).replace("max_new_tokens", "max_tokens"), param=param
        ) from None


def absorb(choice: _Choice, event: Event) -> None:
    choice.text += event.text
    if event.logprob is not None:
        choice.logprobs.append(event.logprob)
    if event.finish_reason is not None:
        choice.finish_reason, choice.error = event.finish_reason, event.error
        choice.prompt_tokens, choice.completion_tokens = event.prompt_tokens, event.completion_tokens


def chat_choice(index: int, choice: _Choice, tools: ToolPlan, logprobs: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.text}
    finish = choice.finish_reason
    if tools.parse:
        content, calls = parse_tool_calls(tools.prefill + choice.text)
        if calls:
            message = {"role": "assistant", "content": content or None, "tool_calls": calls}
            finish = "tool_calls"
    return {
        "index": index,
        "message": message,
        "finish_reason": finish,
        "logprobs": chat_logprobs(choice.logprobs) if logprobs else None,
    }


def might_be_tool_call(text: str) -> bool:
    """Whether a reply that starts with `text` may still turn out to be a tool call (so must be held)."""
    head = text.lstrip()
    return any(marker.startswith(head) or head.startswith(marker) for marker in ("<tool_call>", "<|python_tag|>", "{"))


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"

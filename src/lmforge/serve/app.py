"""The OpenAI-compatible HTTP app (FastAPI) over the batching engine.

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (plain or SSE streaming),
POST /tokenize, GET /metrics (Prometheus), GET /health. With api_keys, every route but /health needs
`Authorization: Bearer KEY` (a load balancer probes /health without secrets; it reveals nothing).
Errors use OpenAI's shape {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request as HttpRequest

from lmforge.errors import UserInputError
from lmforge.generate.load import LoadedModel
from lmforge.serve.engine import Engine, Event, QueueFullError, Request
from lmforge.serve.metrics import Metrics
from lmforge.serve.protocol import (
    DEFAULT_MAX_TOKENS,
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    TokenizeRequest,
    chat_logprobs,
    completion_logprobs,
    new_id,
    now_s,
    usage,
)
from lmforge.serve.tools import ToolPlan, parse_tool_calls, plan_tools, render_with_tools

RETRY_AFTER_S = 1
ROUTES = frozenset({"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/tokenize"})
DISCONNECT_POLL_S = 0.5


@dataclass
class _Choice:
    """What one sequence produced so far."""

    text: str = ""
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class _Bridge:
    """Events from the engine thread to one HTTP request's coroutine. The loop is woken at most once per batch of
    events (not once per token), and the coroutine takes everything that arrived since it last looked."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
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
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:  # event loop
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


class _AuthAndCount:
    """Bearer-key check and per-route request counts as plain ASGI middleware (FastAPI's @app.middleware wraps
    every streamed chunk in an extra task hop, a measurable cost per token)."""

    def __init__(self, app: Any, *, api_keys: list[str], metrics: Metrics):
        self.app, self.api_keys, self.metrics = app, api_keys, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values for Prometheus
        if self.api_keys and path != "/health" and scope["method"] != "OPTIONS":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(given.encode(), key.encode()) for key in self.api_keys):
                from fastapi.responses import JSONResponse

                self.metrics.record_request(path, 401)
                error = ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                 type="authentication_error", code="invalid_api_key")
                await JSONResponse(error.body(), status_code=401)(scope, receive, send)
                return

        async def counted_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.metrics.record_request(path, message["status"])
            await send(message)

        await self.app(scope, receive, counted_send)


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


def create_app(engine: Engine, *, api_keys: Sequence[str] = (), cors_origins: Sequence[str] = (),
               served_model_name: str | None = None, max_queue: int | None = None,
               request_timeout_s: float | None = 600.0) -> Any:
    """The FastAPI app serving `engine`'s models. `served_model_name` renames the first (base) model."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    if max_queue is not None:
        engine.max_queue = max_queue
    keys = list(engine.models)
    public = {(served_model_name if served_model_name and index == 0 else key): key for index, key in enumerate(keys)}
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        engine.start()
        yield
        # uvicorn has already let in-flight requests finish; the engine drains whatever is left.
        await asyncio.to_thread(engine.stop)

    app = FastAPI(title="lmforge", lifespan=lifespan)
    app.state.engine = engine
    app.state.metrics = metrics

    app.add_middleware(_AuthAndCount, api_keys=list(api_keys), metrics=metrics)
    if cors_origins:  # added last, so outermost: preflights and 401s carry the CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    @app.exception_handler(ApiError)
    async def api_error(_: HttpRequest, error: ApiError) -> Any:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: HttpRequest, error: RequestValidationError) -> Any:
        problems = error.errors()
        first = problems[0] if problems else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        if first.get("type") == "json_invalid":
            message, param = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}", None
        else:
            message = "; ".join(f"{'.'.join(str(p) for p in item['loc'] if p != 'body') or 'the request body'}: "
                                f"{item['msg']}" for item in problems)
            param = ".".join(loc) or None
        return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: HttpRequest, error: HTTPException) -> Any:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(error.status_code, str(error.detail), type=kind).body(),
                            status_code=error.status_code)

    def resolve(model: str | None) -> tuple[str, LoadedModel]:
        if model is None:
            name = next(iter(public))
        elif model in public:
            name = model
        else:
            raise ApiError(404, f"the model {model!r} does not exist here; available: {', '.join(public)}",
                           type="not_found_error", param="model", code="model_not_found")
        return name, engine.models[public[name]]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "running": engine.running, "waiting": engine.queue_depth}

    @app.get("/metrics")
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.render(engine), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": now_s(), "owned_by": "lmforge",
             "max_model_len": engine.models[key].context_length,
             # "default" = the model has no chat template and chats are rendered as ChatML (docs/serve.md)
             "chat_template": engine.models[key].chat_template_source} for name, key in public.items()]}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        _, loaded = resolve(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "give exactly one of prompt or messages", param="prompt")
        if body.messages is not None:
            ids = loaded.tokenizer(render_chat(loaded, body.messages, None), add_special_tokens=False)["input_ids"]
        else:
            ids = loaded.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
        return {"tokens": ids, "count": len(ids), "max_model_len": loaded.context_length}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, http: HttpRequest) -> Any:
        name, loaded = resolve(body.model)
        if not body.messages:
            raise ApiError(400, "messages must not be empty", param="messages")
        tools = plan_tools(body.tools, body.tool_choice)
        prompt_ids = loaded.tokenizer(render_chat(loaded, body.messages, tools.tools) + tools.prefill,
                                      add_special_tokens=False)["input_ids"]
        top = (body.top_logprobs or 0) if body.logprobs else None
        requests = build_requests(body, public[name], loaded, [prompt_ids], top, "messages",
                                  body.max_completion_tokens or body.max_tokens)
        started = time.perf_counter()
        if body.stream:
            return StreamingResponse(stream_chat(body, name, requests, submit(requests), tools, started),
                                     media_type="text/event-stream")
        choices = await collect(requests, submit(requests), started, http)
        return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": now_s(), "model": name,
                "choices": [chat_choice(index, choice, tools, body.logprobs) for index, choice in enumerate(choices)],
                "usage": usage(choices[0].prompt_tokens, sum(c.completion_tokens for c in choices))}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HttpRequest) -> Any:
        name, loaded = resolve(body.model)
        prompts = completion_prompts(body.prompt, loaded)
        requests = build_requests(body, public[name], loaded, prompts, body.logprobs, "prompt", body.max_tokens)
        started = time.perf_counter()
        if body.stream:
            return StreamingResponse(stream_completion(body, name, requests, submit(requests), started),
                                     media_type="text/event-stream")
        choices = await collect(requests, submit(requests), started, http)
        return {"id": new_id("cmpl"), "object": "text_completion", "created": now_s(), "model": name,
                "choices": [{"index": index, "text": choice.text, "finish_reason": choice.finish_reason,
                             "logprobs": completion_logprobs(choice.logprobs) if body.logprobs is not None else None}
                            for index, choice in enumerate(choices)],
                "usage": usage(sum(len(r.prompt_ids) for r in requests[::body.n]),
                               sum(c.completion_tokens for c in choices))}

    def submit(requests: list[Request]) -> _Bridge:
        """Hand every request to the engine; their events arrive on one bridge as (index, Event)."""
        bridge = _Bridge(asyncio.get_running_loop())
        for index, request in enumerate(requests):
            request.on_event = lambda event, i=index: bridge.push(i, event)
            try:
                engine.submit(request)
            except QueueFullError as error:
                for earlier in requests[:index]:
                    earlier.cancel()
                raise ApiError(429, str(error), type="rate_limit_error", code="queue_full",
                               headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        return bridge

    def build_requests(body: Any, key: str, loaded: LoadedModel, prompts: list[list[int]], logprobs: int | None,
                       prompt_param: str, max_tokens: int | None) -> list[Request]:
        out = []
        for prompt_ids in prompts:
            params = sampling_for(body, loaded, len(prompt_ids), prompt_param, max_tokens)
            for i in range(body.n):
                seed = params.seed + i if params.seed is not None else None
                out.append(Request(key, prompt_ids, params.model_copy(update={"seed": seed}), lambda _: None,
                                   logprobs=logprobs, timeout_s=request_timeout_s, ignore_eos=body.ignore_eos))
        return out

    async def collect(requests: list[Request], bridge: _Bridge, started: float, http: HttpRequest) -> list[_Choice]:
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
        record(choices, started, first)
        for choice in choices:
            if choice.finish_reason == "timeout":
                raise ApiError(504, f"{choice.error}; the limit is {request_timeout_s} s (--timeout)",
                               type="timeout_error", code="timeout")
            if choice.finish_reason == "error":
                raise ApiError(500, choice.error or "generation failed", type="server_error")
        return choices

    def record(choices: list[_Choice], started: float, first: float | None) -> None:
        metrics.record_generation(sum(c.prompt_tokens for c in choices), sum(c.completion_tokens for c in choices),
                                  time.perf_counter() - started, first - started if first else None)

    async def stream_chat(body: ChatCompletionRequest, name: str, requests: list[Request], bridge: _Bridge,
                          tools: ToolPlan, started: float) -> AsyncIterator[str]:
        ident, created = new_id("chatcmpl"), now_s()

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
            return sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]})

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
                out, pending = [], _Pending(lambda i, text: chunk(i, {"content": text}))
                for index, event in await bridge.get_all():
                    first = first or time.perf_counter()
                    choice = choices[index]
                    absorb(choice, event)
                    if choice.finish_reason in ("timeout", "error"):
                        out += [*pending.flush_all(), sse(ApiError(
                            504 if choice.finish_reason == "timeout" else 500, choice.error or "",
                            type=f"{choice.finish_reason}_error").body()), "data: [DONE]\n\n"]
                        yield "".join(out)
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
                                out.append(chunk(index, {"tool_calls": [{"index": k, **call}
                                                                        for k, call in enumerate(calls)]}))
                                choice.finish_reason = "tool_calls"
                            elif held[index]:
                                out.append(chunk(index, {"content": held[index]}))
                        out.append(chunk(index, {}, finish=choice.finish_reason))
                yield "".join(out + pending.flush_all())
            record(choices, started, first)
            if body.include_usage:
                yield sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                           "choices": [], "usage": usage(choices[0].prompt_tokens,
                                                         sum(c.completion_tokens for c in choices))})
            yield "data: [DONE]\n\n"
        finally:  # a client that went away (the generator is closed or cancelled) stops its generation
            for request in requests:
                request.cancel()

    async def stream_completion(body: CompletionRequest, name: str, requests: list[Request], bridge: _Bridge,
                                started: float) -> AsyncIterator[str]:
        ident, created = new_id("cmpl"), now_s()

        def chunk(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> str:
            return sse({"id": ident, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]})

        choices = [_Choice() for _ in requests]
        first: float | None = None
        try:
            while any(c.finish_reason is None for c in choices):
                out, pending = [], _Pending(lambda i, text: chunk(i, text))
                for index, event in await bridge.get_all():
                    first = first or time.perf_counter()
                    absorb(choices[index], event)
                    reason = choices[index].finish_reason
                    if reason in ("timeout", "error"):
                        out += [*pending.flush_all(), sse(ApiError(504 if reason == "timeout" else 500, choices[index].error or "",
                                             type=f"{reason}_error").body()), "data: [DONE]\n\n"]
                        yield "".join(out)
                        return
                    logprobs = (completion_logprobs([event.logprob])
                                if event.logprob and body.logprobs is not None else None)
                    if logprobs:
                        out += [*pending.flush(index), chunk(index, event.text, logprobs=logprobs)]
                    elif event.text:
                        pending.add(index, event.text)
                    if reason is not None:
                        out += [*pending.flush(index), chunk(index, "", finish=reason)]
                yield "".join(out + pending.flush_all())
            record(choices, started, first)
            if body.include_usage:
                yield sse({"id": ident, "object": "text_completion", "created": created, "model": name, "choices": [],
                           "usage": usage(sum(len(r.prompt_ids) for r in requests[::body.n]),
                                          sum(c.completion_tokens for c in choices))})
            yield "data: [DONE]\n\n"
        finally:
            for request in requests:
                request.cancel()

    return app


def render_chat(loaded: LoadedModel, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """The prompt text for a chat request; a bad message list is a 400, not a 500."""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
            raise ApiError(400, f"messages[{index}] needs a role of system, user, assistant or tool",
                           param=f"messages[{index}].role")
    try:
        return render_with_tools(loaded, messages, tools)
    except Exception as error:  # jinja raises its own errors (a template that rejects a role order)  # noqa: BLE001
        raise ApiError(400, f"the chat template cannot render these messages: {error}", param="messages") from None


def completion_prompts(prompt: str | list[str] | list[int], loaded: LoadedModel) -> list[list[int]]:
    """Token ids per prompt: a string, a list of strings, or one list of token ids."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise ApiError(400, "prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        if any(not 0 <= p < len(loaded.tokenizer) for p in prompt):  # type: ignore[operator]
            raise ApiError(400, f"prompt token ids must be in [0, {len(loaded.tokenizer)})", param="prompt")
        return [list(prompt)]  # type: ignore[arg-type]
    ids = [loaded.tokenizer(text, add_special_tokens=True)["input_ids"] for text in prompt]
    if any(not i for i in ids):
        raise ApiError(400, "prompt must not be empty", param="prompt")
    return ids


def sampling_for(body: Any, loaded: LoadedModel, prompt_tokens: int, prompt_param: str,
                 max_tokens: int | None) -> Any:
    """Validated SamplingParams for a request, with the context check naming both numbers (USERS.md serving 5)."""
    from pydantic import ValidationError

    from lmforge.generate.sampling import SamplingParams, describe_errors

    context = loaded.context_length
    if max_tokens is not None and prompt_tokens + max_tokens > context:
        raise ApiError(400, f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
                            f"context length of {context} tokens; shorten the prompt or lower max_tokens",
                       param="max_tokens", code="context_length_exceeded")
    if max_tokens is None:
        if prompt_tokens >= context:
            raise ApiError(400, f"the prompt ({prompt_tokens} tokens) fills the model's context length of {context} "
                                "tokens; shorten it", param=prompt_param, code="context_length_exceeded")
        max_tokens = min(DEFAULT_MAX_TOKENS, context - prompt_tokens)
    try:
        return SamplingParams(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
                              repetition_penalty=body.repetition_penalty, presence_penalty=body.presence_penalty,
                              frequency_penalty=body.frequency_penalty, max_new_tokens=max_tokens, stop=body.stops,
                              seed=body.seed)
    except ValidationError as error:
        field_name = str(error.errors()[0]["loc"][0]) if error.errors() else None
        param = {"max_new_tokens": "max_tokens"}.get(field_name or "", field_name)
        raise ApiError(400, "; ".join(describe_errors(error)).replace("max_new_tokens", "max_tokens"),
                       param=param) from None


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
    return {"index": index, "message": message, "finish_reason": finish,
            "logprobs": chat_logprobs(choice.logprobs) if logprobs else None}


def might_be_tool_call(text: str) -> bool:
    """Whether a reply that starts with `text` may still turn out to be a tool call (so must be held)."""
    head = text.lstrip()
    return any(marker.startswith(head) or head.startswith(marker) for marker in ("<tool_call>", "<|python_tag|>", "{"))


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def parse_adapters(specs: Sequence[str]) -> list[tuple[str, str]]:
    """`NAME=DIR` pairs from --adapter options (the name is the model name clients ask for)."""
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserInputError(f"--adapter {spec!r}: write NAME=DIR (clients select it with model=NAME)")
        pairs.append((name, path))
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise UserInputError(f"--adapter names must differ (got {', '.join(names)})")
    return pairs


def load_engine(model: str, *, adapters: Sequence[tuple[str, str]] = (), served_model_name: str | None = None,
                max_batch_size: int = 16, max_queue: int = 256, device: str | None = None,
                dtype: str | None = None, merge_adapters: bool = False, trust_pickle: bool = False,
                trust_remote_code: bool = False) -> Engine:
    """An engine holding MODEL (under its served name) and each LoRA adapter beside it on the same weights
    (lmforge.generate.load.attach_adapter); an adapter that adds tokens gets its own merged copy.

    `merge_adapters` gives every adapter its own merged copy instead: a model's memory per adapter, bought
    for speed (benchmarks/serve_adapters.py: an unmerged adapter decoded at 0.61x a merged copy on a CPU)."""
    from lmforge.generate.load import attach_adapter, load_model

    trust = {"trust_pickle": trust_pickle, "trust_remote_code": trust_remote_code}
    base = load_model(model, device=device, dtype=dtype, **trust)
    models = {served_model_name or base.name: base}
    for name, path in adapters:
        if name in models:
            raise UserInputError(f"--adapter name {name!r} is already the base model's name; choose another")
        shared = None if merge_adapters else attach_adapter(base, name, path, trust_pickle=trust_pickle)
        models[name] = shared or load_model(model, adapter=path, device=device, dtype=dtype, **trust)
    return Engine(models, max_batch_size=max_batch_size, max_queue=max_queue)


def serve(model: str, *, adapters: Sequence[tuple[str, str]] = (), host: str = "127.0.0.1", port: int = 8000,
          api_keys: Sequence[str] = (), cors_origins: Sequence[str] = (), served_model_name: str | None = None,
          max_batch_size: int = 16, max_queue: int = 256, request_timeout_s: float | None = 600.0,
          device: str | None = None, dtype: str | None = None, threads: int | None = None,
          merge_adapters: bool = False, trust_pickle: bool = False, trust_remote_code: bool = False,
          on_ready: Any = None) -> None:
    """Load the model(s) and serve them with uvicorn until interrupted (Ctrl-C / SIGTERM finish in-flight requests).

    `threads` sets torch's CPU threads: on a machine shared with other work, fewer threads than cores avoids
    OpenMP threads spinning against each other (measured 10-20x slower tiny matmuls on a loaded 2-core host).
    """
    if max_batch_size < 1 or max_queue < 1:
        raise UserInputError("--max-batch-size and --max-queue must be >= 1")
    if request_timeout_s is not None and request_timeout_s <= 0:
        raise UserInputError(f"--timeout must be > 0 seconds (got {request_timeout_s})")
    check_port(host, port)  # before the slow model load, not after it
    if threads is not None:
        import torch

        if threads < 1:
            raise UserInputError("--threads must be >= 1")
        torch.set_num_threads(threads)
    engine = load_engine(model, adapters=adapters, served_model_name=served_model_name,
                         max_batch_size=max_batch_size, max_queue=max_queue, device=device, dtype=dtype,
                         merge_adapters=merge_adapters, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    app = create_app(engine, api_keys=api_keys, cors_origins=cors_origins, request_timeout_s=request_timeout_s)
    if on_ready is not None:
        on_ready(list(engine.models))
    run_uvicorn(app, host=host, port=port, graceful_timeout_s=request_timeout_s)


def run_uvicorn(app: Any, *, host: str, port: int, graceful_timeout_s: float | None) -> None:
    """uvicorn until SIGINT/SIGTERM, which stop new connections and let in-flight requests finish (a second
    Ctrl-C forces the exit). Unlike `uvicorn.run`, the signal is not re-raised afterwards, so a graceful stop ends
    with exit code 0 instead of a KeyboardInterrupt traceback."""
    import contextlib
    import signal
    import threading

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=int(graceful_timeout_s) if graceful_timeout_s else None)
    Server(config).run()


def check_port(host: str, port: int) -> None:
    """Fail fast with one line when the address is taken or cannot be bound."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserInputError(f"cannot listen on {host}:{port} ({error.strerror}); pass another --port or stop "
                                 "the server using it") from None

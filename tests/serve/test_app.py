"""The server through the real openai client (plain and streaming) and raw HTTP for the error cases."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY

CHAT = [{"role": "user", "content": "What is 12 plus 30?"}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY, max_retries=0)


def test_models_lists_every_served_name(client):
    assert [m.id for m in client.models.list().data] == ["tiny", "tiny-lora"]


def test_presence_and_frequency_penalties_are_applied(client, tiny_loaded):
    """The openai client's own parameters reach the engine: greedy text equals lmforge.generate's."""
    from lmforge.generate.generation import generate
    from lmforge.generate.sampling import SamplingParams

    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=12, temperature=0, presence_penalty=0.4, frequency_penalty=1.5
    )
    params = SamplingParams(temperature=0, max_new_tokens=12, presence_penalty=0.4, frequency_penalty=1.5)
    assert reply.choices[0].message.content == generate(tiny_loaded, CHAT, params).text
    plain = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0)
    assert plain.choices[0].message.content != reply.choices[0].message.content


def test_chat_usage_counts_are_token_counts(client, served, tiny_loaded):
    reply = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=7, temperature=0)
    prompt_ids = tiny_loaded.tokenizer(tiny_loaded.render_chat(CHAT), add_special_tokens=False)["input_ids"]
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.completion_tokens <= 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 7


def test_seed_reproduces_and_n_gives_n_choices(client):
    def ask():
        return client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=12, temperature=1.0, seed=123, n=2
        )

    first, second = ask(), ask()
    assert len(first.choices) == 2
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]


def test_streaming_role_first_finish_last_usage_and_done(served, client):
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=CHAT,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            temperature=0,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 6
    plain = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, temperature=0)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert streamed == plain.choices[0].message.content
    raw = httpx.post(
        f"{served.url}/v1/chat/completions",
        headers=AUTH,
        timeout=30,
        json={"model": "tiny", "messages": CHAT, "max_tokens": 3, "stream": True},
    )
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_stop_string_is_honoured_and_never_streamed(client, served):
    free = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=30, temperature=0)
    text = free.choices[0].text
    stop = text[5:8] if len(text) >= 8 else text[-2:]
    cut = client.completions.create(
        model="tiny", prompt="The quick brown fox", max_tokens=30, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="The quick brown fox", max_tokens=30, temperature=0, stop=[stop], stream=True
        )
    ]
    assert "".join(pieces) == cut.choices[0].text and stop not in "".join(pieces)


def test_completion_logprobs_one_per_token(client):
    reply = client.completions.create(model="tiny", prompt="Count the letters", max_tokens=4, logprobs=2, temperature=0)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.token_logprobs) == reply.usage.completion_tokens
    assert all(len(top) <= 2 and lp <= 0 for top, lp in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    # Greedy picks the most likely token: its logprob is the best of the top alternatives.
    assert logprobs.token_logprobs[0] == pytest.approx(max(logprobs.top_logprobs[0].values()))


def test_chat_logprobs_and_adapter_name(client):
    reply = client.chat.completions.create(
        model="tiny-lora", messages=CHAT, max_tokens=3, logprobs=True, top_logprobs=3
    )
    assert reply.model == "tiny-lora"
    assert all(len(entry.top_logprobs) == 3 for entry in reply.choices[0].logprobs.content)


class _Gated:
    """The tiny model, whose forward number `hold_at` waits until the test sets `release`: what happens meanwhile
    (requests queueing up, a client hanging up) is decided by the test, not by how fast the machine is."""

    def __init__(self, inner, hold_at: int = 1):
        self.inner, self.generation_config = inner, inner.generation_config
        self.hold_at, self.calls, self.held_rows = hold_at, 0, 0
        self.holding, self.release = threading.Event(), threading.Event()

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls == self.hold_at:
            self.held_rows = kwargs["input_ids"].shape[0]
            self.holding.set()
            if not self.release.wait(60):
                raise TimeoutError("the test never released the model")
        return self.inner(**kwargs)


def _wait_for(condition, what: str, limit_s: float = 60) -> None:
    """Poll until `condition()` holds (a generous limit: this waits for an event, it does not time anything)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def _recording_submits(engine) -> list:
    """The engine's requests, as the app submits them (to watch a request's `cancelled` flag)."""
    submitted, submit = [], engine.submit
    engine.submit = lambda request: (submitted.append(request), submit(request))[1]
    return submitted


def test_requests_waiting_together_share_every_decode_step(tiny_loaded):
    """Six requests that wait together run as one batch: one forward decodes a token for all six, instead of each
    taking its turn. The first request's prefill is held until the other five are queued, so the batch does not
    depend on scheduling speed."""
    import dataclasses

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    gated = _Gated(tiny_loaded.model)
    engine = Engine({"tiny": dataclasses.replace(tiny_loaded, model=gated)}, max_batch_size=8)
    results = []
    with run_server(create_app(engine)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def ask(i: int) -> None:
            results.append(
                client.completions.create(
                    model="tiny", prompt=f"Sort {i}", max_tokens=24, temperature=0, extra_body={"ignore_eos": True}
                )
            )

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        _wait_for(
            lambda: gated.holding.is_set() and gated.held_rows + engine.queue_depth == 6, "six requests in the engine"
        )
        gated.release.set()
        for thread in threads:
            thread.join(60)
    assert len(results) == 6 and all(r.usage.completion_tokens == 24 for r in results)
    assert engine.stats.max_batch_sequences == 6  # taking turns would never decode more than one row per forward
    assert engine.stats.decode_steps < 2 * 24  # not 6 x 24: the five that waited shared every step


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "tiny", "messages": CHAT, "temperature": -0.5}, "temperature", "greater than or equal to 0"),
        ({"model": "tiny", "messages": CHAT, "top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"model": "tiny", "messages": []}, "messages", "must not be empty"),
        (
            {"model": "tiny", "messages": CHAT, "max_tokens": 500},
            "max_tokens",
            "(500) exceeds the model's context length of 256",
        ),
        ({"model": "tiny", "messages": CHAT, "tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"model": "tiny", "messages": CHAT, "presence_penalty": 2.5}, "presence_penalty", "less than or equal to 2"),
        ({"model": "tiny", "messages": [{"content": "no role"}]}, "messages[0].role", "needs a role"),
    ],
)
def test_bad_requests_get_400_in_openai_shape(served, body, param, words):
    response = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and words in error["message"]


def test_invalid_json_and_unknown_model(served):
    bad = httpx.post(
        f"{served.url}/v1/chat/completions",
        content=b'{"model": ',
        timeout=30,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    missing = httpx.post(f"{served.url}/v1/completions", json={"model": "nope", "prompt": "x"}, headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_api_keys_guard_every_route_but_health(served):
    for method, path in [
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("GET", "/metrics"),
        ("POST", "/tokenize"),
    ]:
        response = httpx.request(method, f"{served.url}{path}", json={})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{served.url}/v1/models", headers={"Authorization": "Bearer sk-second"}).status_code == 200
    assert httpx.get(f"{served.url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"


def test_cors_preflight(served):
    response = httpx.options(
        f"{served.url}/v1/chat/completions",
        headers={
            "Origin": "http://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://example.com"


def test_tokenize_and_metrics(served, tiny_loaded):
    tokens = httpx.post(f"{served.url}/tokenize", json={"prompt": "hello world"}, headers=AUTH).json()
    assert tokens["tokens"] == tiny_loaded.tokenizer("hello world")["input_ids"]
    assert tokens["max_model_len"] == 256
    text = httpx.get(f"{served.url}/metrics", headers=AUTH).text
    assert 'lmforge_requests_total{endpoint="/tokenize",status="200"}' in text
    assert "lmforge_queue_depth" in text and "lmforge_request_latency_seconds_bucket" in text


def test_tool_choice_none_gives_plain_content(client):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    reply = client.chat.completions.create(model="tiny", messages=CHAT, tools=tools, tool_choice="none", max_tokens=4)
    assert reply.choices[0].message.tool_calls is None


def test_stream_disconnect_cancels_generation(tiny_loaded):
    """The model is held at its third forward until the server has cancelled the request of the client that went
    away; then no further forward runs for it (of the 250 tokens asked)."""
    import dataclasses

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    gated = _Gated(tiny_loaded.model, hold_at=3)
    engine = Engine({"tiny": dataclasses.replace(tiny_loaded, model=gated)})
    submitted = _recording_submits(engine)
    with run_server(create_app(engine)) as (url, _):
        with httpx.stream(
            "POST",
            f"{url}/v1/completions",
            timeout=30,
            json={
                "model": "tiny",
                "prompt": "x",
                "max_tokens": 250,
                "stream": True,
                "temperature": 0,
                "ignore_eos": True,
            },
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    break
        _wait_for(lambda: submitted and submitted[0].cancelled, "the server to cancel the request")
        gated.release.set()
        _wait_for(lambda: engine.running == 0, "the engine to drop the request")
    # no forward after the held one (the engine may drop it sooner): at most 2 decode steps of the 250 asked
    assert gated.calls <= 3 and engine.stats.decoded_tokens <= 2 and engine.stats.finished == 1


def test_full_queue_answers_429_with_retry_after(tiny_loaded):
    import asyncio

    from lmforge.generate.sampling import SamplingParams
    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine, Request

    engine = Engine({"tiny": tiny_loaded}, max_queue=1)  # never started (no lifespan): nothing leaves the queue
    engine.submit(Request("tiny", [1, 2], SamplingParams(max_new_tokens=2), lambda _: None))

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(engine)), base_url="http://t"
        ) as http:
            return await http.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})

    response = asyncio.run(ask())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "queue_full"


def test_request_timeout_is_504_plain_and_an_error_event_streamed(tiny_loaded):
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    app = create_app(Engine({"tiny": tiny_loaded}), request_timeout_s=1e-6)
    with TestClient(app) as http:
        plain = http.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 50})
        assert plain.status_code == 504 and "timed out" in plain.json()["error"]["message"]
        streamed = http.post("/v1/chat/completions", json={"model": "tiny", "messages": CHAT, "stream": True})
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert "timed out" in json.loads(events[-2])["error"]["message"] and events[-1] == "[DONE]"


def test_shutdown_finishes_in_flight_requests(tiny_loaded):
    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    engine = Engine({"tiny": tiny_loaded})
    replies = []
    with run_server(create_app(engine)) as (url, server):

        def ask() -> None:
            replies.append(
                httpx.post(
                    f"{url}/v1/completions",
                    timeout=60,
                    json={"model": "tiny", "prompt": "hi", "max_tokens": 80, "ignore_eos": True},
                )
            )

        thread = threading.Thread(target=ask)
        thread.start()
        while engine.running == 0 and thread.is_alive():
            time.sleep(0.002)
        server.should_exit = True  # what SIGTERM / Ctrl-C do
        thread.join(60)
    assert replies[0].status_code == 200
    assert replies[0].json()["usage"]["completion_tokens"] == 80


def test_plain_request_whose_client_hangs_up_is_cancelled(tiny_loaded):
    """A non-streamed request notices its client hung up (it polls twice a second) while the model is held, and
    no further token is decoded for it."""
    import dataclasses

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    gated = _Gated(tiny_loaded.model, hold_at=3)
    engine = Engine({"tiny": dataclasses.replace(tiny_loaded, model=gated)})
    submitted = _recording_submits(engine)
    with run_server(create_app(engine)) as (url, _):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/v1/completions",
                timeout=httpx.Timeout(30, read=0.3),
                json={"model": "tiny", "prompt": "x", "max_tokens": 250, "ignore_eos": True},
            )
        _wait_for(lambda: submitted and submitted[0].cancelled, "the server to cancel the request")
        gated.release.set()
        _wait_for(lambda: engine.running == 0, "the engine to drop the request")
    assert gated.calls <= 3 and engine.stats.decoded_tokens <= 2 and engine.stats.finished == 1  # of 250 asked


def test_streamed_n_and_logprobs(client):
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=4, n=2, stream=True, temperature=0.9, seed=5
        )
    )
    roles = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    finished = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(roles) == [0, 1] and sorted(finished) == [0, 1]
    pieces = list(
        client.completions.create(
            model="tiny",
            prompt="hello",
            max_tokens=5,
            logprobs=1,
            stream=True,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
    )
    tokens = [t for p in pieces if p.choices and p.choices[0].logprobs for t in p.choices[0].logprobs.tokens]
    assert len(tokens) == 5  # one logprob entry per generated token, streamed as they come


def test_tokenize_messages_counts_the_rendered_chat(served, tiny_loaded):
    counted = httpx.post(f"{served.url}/tokenize", json={"messages": CHAT}, headers=AUTH).json()
    reply = openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY).chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=1
    )
    assert counted["count"] == reply.usage.prompt_tokens


def test_model_without_chat_template_chats_through_the_documented_default(tiny_llama_dir, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from lmforge.generate.load import load_model
    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama_dir, bare)
    (bare / "chat_template.jinja").unlink()
    with TestClient(create_app(Engine({"bare": load_model(str(bare))}))) as http:
        assert http.get("/v1/models").json()["data"][0]["chat_template"] == "default"
        reply = http.post("/v1/chat/completions", json={"model": "bare", "messages": CHAT, "max_tokens": 2})
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["role"] == "assistant"


def _error(response: httpx.Response, status: int) -> dict:
    """The OpenAI-shaped error of `response`, which must have `status`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 4, "seed": 18446744073709551616}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "seed": -9223372036854775809}),
    ],
)
def test_a_seed_outside_int64_is_refused_at_the_door(served, path, body):
    """Such a seed once killed the engine thread: this request never answered and every later one queued."""
    error = _error(httpx.post(f"{served.url}{path}", json={"model": "tiny", **body}, headers=AUTH, timeout=10), 400)
    assert error["param"] == "seed"
    ok = httpx.post(
        f"{served.url}/v1/completions",
        headers=AUTH,
        timeout=30,
        json={"model": "tiny", "prompt": "hi", "max_tokens": 2, "seed": 2**63 - 1, "n": 2},
    )
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 2  # seed + 1 overflows int64, still served


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("temperature", "1e-39"),
        ("temperature", "1e9"),
        ("temperature", "1e400"),
        ("repetition_penalty", "1e-300"),
        ("repetition_penalty", "1e9"),
        ("top_p", "NaN"),
        ("presence_penalty", "-Infinity"),
    ],
)
def test_values_that_cannot_give_a_distribution_are_refused(served, field, raw):
    body = f'{{"model": "tiny", "prompt": "hi", "max_tokens": 2, "{field}": {raw}}}'
    response = httpx.post(
        f"{served.url}/v1/completions", content=body, timeout=10, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert _error(response, 400)["param"] == field


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": "tiny", "prompt": "a\ud800b", "max_tokens": 2}, "prompt"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": "a\ud800b"}]},
            "messages[0].content",
        ),
        ("/tokenize", {"prompt": "a\ud800b"}, "prompt"),
    ],
)
def test_a_lone_surrogate_is_an_openai_shaped_400_and_counted(served, path, body, param):
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=10) as http:
        # json.dumps writes the lone surrogate as the \ud800 escape, as a JavaScript client would
        response = http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
        error = _error(response, 400)
        assert error["param"] == param and "surrogate" in error["message"]
        assert http.get("/health").status_code == 200  # the same keep-alive connection still works
        metrics = http.get("/metrics").text
    assert f'lmforge_requests_total{{endpoint="{path}",status="400"}}' in metrics


def test_an_unexpected_exception_is_an_openai_shaped_500_and_counted(tiny_loaded):
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    class Broken:
        def __call__(self, *args, **kwargs):
            raise TypeError("tokenizer bug")

        def __getattr__(self, name):
            return getattr(tiny_loaded.tokenizer, name)

    import dataclasses

    app = create_app(Engine({"tiny": dataclasses.replace(tiny_loaded, tokenizer=Broken())}))
    with TestClient(app, raise_server_exceptions=False) as http:
        error = _error(http.post("/v1/completions", json={"model": "tiny", "prompt": "hi"}), 500)
        assert error["type"] == "server_error" and "TypeError" in error["message"]
        assert 'endpoint="/v1/completions",status="500"' in http.get("/metrics").text


def test_body_and_prompt_limits_name_themselves(tiny_loaded):
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    app = create_app(Engine({"tiny": tiny_loaded}), max_body_bytes=2000, max_prompt_chars=300)
    with TestClient(app) as http:
        big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 3000}]}
        assert "2000 bytes" in _error(http.post("/v1/chat/completions", json=big), 413)["message"]

        def chunks():  # no Content-Length: the cap holds while the body streams in
            yield b'{"model": "tiny", "prompt": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        assert (
            "2000 bytes"
            in _error(
                http.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"}), 413
            )["message"]
        )
        long_chat = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 70}]}
        error = _error(http.post("/v1/chat/completions", json=long_chat), 400)
        assert "300 characters" in error["message"] and error["param"] == "messages"
        error = _error(http.post("/v1/completions", json={"model": "tiny", "prompt": ["ok", "z" * 301]}), 400)
        assert "300 characters" in error["message"] and error["param"] == "prompt"
        assert http.post("/tokenize", json={"prompt": "z" * 301}).status_code == 400


def test_tokenizing_happens_off_the_event_loop(tiny_loaded):
    """A prompt that takes long to tokenize must not stall /health or other requests (a 10 MB chat once stalled
    the server for 9 s). The tokenizer here blocks until the test has had its /health answer."""
    import dataclasses

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    entered, release = threading.Event(), threading.Event()

    class Blocking:
        def __call__(self, text, *args, **kwargs):
            if "SLOW" in str(text):
                entered.set()
                release.wait(30)
            return tiny_loaded.tokenizer(text, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(tiny_loaded.tokenizer, name)

    engine = Engine({"tiny": dataclasses.replace(tiny_loaded, tokenizer=Blocking())})
    replies = []
    with run_server(create_app(engine)) as (url, _):
        thread = threading.Thread(
            target=lambda: replies.append(
                httpx.post(
                    f"{url}/v1/completions", timeout=60, json={"model": "tiny", "prompt": "SLOW", "max_tokens": 2}
                )
            )
        )
        thread.start()
        assert entered.wait(30)
        try:
            health = httpx.get(f"{url}/health", timeout=5)
        finally:
            release.set()
            thread.join(60)
    assert health.status_code == 200 and replies[0].status_code == 200


def test_empty_api_keys_are_refused(tiny_loaded):
    from lmforge.errors import UserInputError
    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    for keys in ([""], ["k", "  "]):
        with pytest.raises(UserInputError, match="empty"):
            create_app(Engine({"tiny": tiny_loaded}), api_keys=keys)


def test_more_sequences_than_the_queue_holds_is_400_not_429(served):
    """n x prompts beyond --max-queue can never be queued, so retrying (what 429 asks) cannot help."""
    response = httpx.post(
        f"{served.url}/v1/completions",
        headers=AUTH,
        timeout=10,
        json={"model": "tiny", "prompt": ["a", "b", "c", "d", "e"], "n": 16, "max_tokens": 2},
    )
    error = _error(response, 400)
    assert "80 sequences" in error["message"] and "64" in error["message"] and error["param"] == "n"


def test_a_dead_engine_shows_in_health_and_refuses_requests(tiny_loaded, monkeypatch):
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    engine = Engine({"tiny": tiny_loaded})
    monkeypatch.setattr(engine, "_take_waiting", lambda *_: (_ for _ in ()).throw(RuntimeError("scheduler bug")))
    with TestClient(create_app(engine)) as http:
        first = http.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
        assert "scheduler bug" in _error(first, 500)["message"]
        assert "scheduler bug" in _error(http.get("/health"), 503)["message"]
        later = http.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
        assert _error(later, 503)["code"] == "engine_dead"


class _Scripted:
    """The tiny model forced to write `script` (token ids), one per step, then its last id forever."""

    def __init__(self, inner, script: list[int]):
        self.inner, self.generation_config, self.script, self.step = inner, inner.generation_config, script, 0

    def __call__(self, **kwargs):
        output = self.inner(**kwargs)
        output.logits[..., self.script[min(self.step, len(self.script) - 1)]] = 1e9
        self.step += 1
        return output


def _scripted_client(tiny_loaded, text: str):
    import dataclasses

    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    tokenizer = tiny_loaded.tokenizer
    script = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    engine = Engine({"tiny": dataclasses.replace(tiny_loaded, model=_Scripted(tiny_loaded.model, script))})
    return TestClient(create_app(engine)), script


def test_logprobs_cover_the_text_and_carry_each_tokens_own_bytes(tiny_loaded):
    """'é' is two byte-level tokens: each entry's bytes are its half of the character (not U+FFFD's bytes), and
    the end-of-turn token that ended the reply, not being in the text, has no entry."""
    client, script = _scripted_client(tiny_loaded, "é!")
    with client as http:
        reply = http.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": CHAT, "logprobs": True, "top_logprobs": 1, "temperature": 0},
        ).json()
    choice = reply["choices"][0]
    assert choice["message"]["content"] == "é!" and choice["finish_reason"] == "stop"
    entries = choice["logprobs"]["content"]
    assert len(entries) == len(script) - 1  # no entry for the end-of-turn token
    assert b"".join(bytes(entry["bytes"]) for entry in entries) == "é!".encode()
    assert entries[0]["bytes"] == [0xC3] and entries[0]["top_logprobs"][0]["bytes"] == [0xC3]


def test_models_by_id_and_token_id_list_prompts(served, client):
    assert client.models.retrieve("tiny-lora").id == "tiny-lora"
    missing = httpx.get(f"{served.url}/v1/models/nope", headers=AUTH)
    assert _error(missing, 404)["code"] == "model_not_found"
    ids = httpx.post(f"{served.url}/tokenize", json={"prompt": "hello"}, headers=AUTH).json()["tokens"]
    reply = client.completions.create(model="tiny", prompt=[ids, ids + ids], max_tokens=3, temperature=0)
    by_text = client.completions.create(model="tiny", prompt=["hello", "hellohello"], max_tokens=3, temperature=0)
    assert [c.text for c in reply.choices] == [c.text for c in by_text.choices]
    assert reply.usage.prompt_tokens == 3 * len(ids)


def test_developer_role_is_a_system_message(client):
    as_developer = client.chat.completions.create(
        model="tiny", max_tokens=5, temperature=0, messages=[{"role": "developer", "content": "Be brief."}, *CHAT]
    )
    as_system = client.chat.completions.create(
        model="tiny", max_tokens=5, temperature=0, messages=[{"role": "system", "content": "Be brief."}, *CHAT]
    )
    assert as_developer.choices[0].message.content == as_system.choices[0].message.content
    assert as_developer.usage.prompt_tokens == as_system.usage.prompt_tokens


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format.type", "not supported"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": "http://x/a.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1]",
            "image_url parts are not supported",
        ),
        ({"temperature": 1e9}, "temperature", "less than or equal to 2"),
        ({"logprobs": "yes"}, "logprobs", "valid boolean"),
        ({"stop": [f"s{i}" for i in range(20_000)]}, "stop", "at most 16 stop strings"),
        ({"max_tokens": "5"}, "max_tokens", "valid integer"),
    ],
)
def test_what_is_not_supported_or_absurd_is_refused(served, body, param, words):
    response = httpx.post(
        f"{served.url}/v1/chat/completions",
        headers=AUTH,
        timeout=10,
        json={"model": "tiny", "messages": CHAT, "max_tokens": 2, **body},
    )
    error = _error(response, 400)
    assert error["param"] == param and words in error["message"]


def test_text_parts_are_joined_like_vllm(client):
    parts = client.chat.completions.create(
        model="tiny",
        max_tokens=4,
        temperature=0,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "12 plus 30?"}]}
        ],
    )
    joined = client.chat.completions.create(
        model="tiny", max_tokens=4, temperature=0, messages=[{"role": "user", "content": "What is\n12 plus 30?"}]
    )
    assert parts.choices[0].message.content == joined.choices[0].message.content


def test_streamed_errors_name_their_type_and_code(tiny_loaded):
    """A stream's error event says what happened (timeout_error / timeout), like a plain reply's 504."""
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    with TestClient(create_app(Engine({"tiny": tiny_loaded}), request_timeout_s=1e-6)) as http:
        streamed = http.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "stream": True})
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    error = json.loads(events[-2])["error"]
    assert (error["type"], error["code"]) == ("timeout_error", "timeout") and events[-1] == "[DONE]"


def test_echo_prepends_the_prompt(client):
    plain = client.completions.create(model="tiny", prompt="The quick", max_tokens=3, temperature=0)
    echoed = client.completions.create(model="tiny", prompt="The quick", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text == "The quick" + plain.choices[0].text
    streamed = client.completions.create(
        model="tiny", prompt="The quick", max_tokens=3, temperature=0, echo=True, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == echoed.choices[0].text

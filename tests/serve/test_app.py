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

    reply = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0,
                                           presence_penalty=0.4, frequency_penalty=1.5)
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
        return client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=1.0,
                                              seed=123, n=2)

    first, second = ask(), ask()
    assert len(first.choices) == 2
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]


def test_streaming_role_first_finish_last_usage_and_done(served, client):
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}, temperature=0))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 6
    plain = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, temperature=0)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert streamed == plain.choices[0].message.content
    raw = httpx.post(f"{served.url}/v1/chat/completions", headers=AUTH, timeout=30,
                     json={"model": "tiny", "messages": CHAT, "max_tokens": 3, "stream": True})
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_stop_string_is_honoured_and_never_streamed(client, served):
    free = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=30, temperature=0)
    text = free.choices[0].text
    stop = text[5:8] if len(text) >= 8 else text[-2:]
    cut = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=30, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[:text.index(stop)]
    pieces = [c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="The quick brown fox", max_tokens=30, temperature=0, stop=[stop], stream=True)]
    assert "".join(pieces) == cut.choices[0].text and stop not in "".join(pieces)


def test_completion_logprobs_one_per_token(client):
    reply = client.completions.create(model="tiny", prompt="Count the letters", max_tokens=4, logprobs=2,
                                      temperature=0)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.token_logprobs) == reply.usage.completion_tokens
    assert all(len(top) <= 2 and lp <= 0 for top, lp in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    # Greedy picks the most likely token: its logprob is the best of the top alternatives.
    assert logprobs.token_logprobs[0] == pytest.approx(max(logprobs.top_logprobs[0].values()))


def test_chat_logprobs_and_adapter_name(client):
    reply = client.chat.completions.create(model="tiny-lora", messages=CHAT, max_tokens=3, logprobs=True,
                                           top_logprobs=3)
    assert reply.model == "tiny-lora"
    assert all(len(entry.top_logprobs) == 3 for entry in reply.choices[0].logprobs.content)


def test_concurrent_requests_share_decode_steps(client, served):
    stats = served.engine.stats
    steps_before, tokens_before = stats.decode_steps, stats.decoded_tokens
    results = []

    def ask(i: int) -> None:
        results.append(client.completions.create(model="tiny", prompt=f"Sort {i}", max_tokens=24, temperature=0,
                                                 extra_body={"ignore_eos": True}))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 6 and all(r.usage.completion_tokens == 24 for r in results)
    sequences_per_step = (stats.decoded_tokens - tokens_before) / (stats.decode_steps - steps_before)
    assert sequences_per_step > 1.5  # one at a time would be exactly 1


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"model": "tiny", "messages": CHAT, "temperature": -0.5}, "temperature", "greater than or equal to 0"),
    ({"model": "tiny", "messages": CHAT, "top_p": 1.5}, "top_p", "less than or equal to 1"),
    ({"model": "tiny", "messages": []}, "messages", "must not be empty"),
    ({"model": "tiny", "messages": CHAT, "max_tokens": 500}, "max_tokens", "(500) exceeds the model's context length of 256"),
    ({"model": "tiny", "messages": CHAT, "tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"model": "tiny", "messages": CHAT, "presence_penalty": 2.5}, "presence_penalty", "less than or equal to 2"),
    ({"model": "tiny", "messages": [{"content": "no role"}]}, "messages[0].role", "needs a role"),
])
def test_bad_requests_get_400_in_openai_shape(served, body, param, words):
    response = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and words in error["message"]


def test_invalid_json_and_unknown_model(served):
    bad = httpx.post(f"{served.url}/v1/chat/completions", content=b'{"model": ', timeout=30,
                     headers={**AUTH, "Content-Type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    missing = httpx.post(f"{served.url}/v1/completions", json={"model": "nope", "prompt": "x"}, headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_api_keys_guard_every_route_but_health(served):
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/metrics"),
                         ("POST", "/tokenize")]:
        response = httpx.request(method, f"{served.url}{path}", json={})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{served.url}/v1/models", headers={"Authorization": "Bearer sk-second"}).status_code == 200
    assert httpx.get(f"{served.url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"


def test_cors_preflight(served):
    response = httpx.options(f"{served.url}/v1/chat/completions", headers={
        "Origin": "http://example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
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
    reply = client.chat.completions.create(model="tiny", messages=CHAT, tools=tools, tool_choice="none",
                                           max_tokens=4)
    assert reply.choices[0].message.tool_calls is None


def test_stream_disconnect_cancels_generation(served):
    before = served.engine.stats.decoded_tokens
    with httpx.stream("POST", f"{served.url}/v1/completions", headers=AUTH, timeout=30,
                      json={"model": "tiny", "prompt": "x", "max_tokens": 250, "stream": True,
                            "ignore_eos": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                break
    deadline = time.monotonic() + 10
    while served.engine.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.engine.running == 0
    assert served.engine.stats.decoded_tokens - before < 100  # of 250 asked


def test_full_queue_answers_429_with_retry_after(served):
    served.engine.max_queue = 0
    try:
        response = httpx.post(f"{served.url}/v1/completions", headers=AUTH, timeout=30,
                              json={"model": "tiny", "prompt": "hi", "max_tokens": 2})
    finally:
        served.engine.max_queue = 64
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
            replies.append(httpx.post(f"{url}/v1/completions", timeout=60, json={
                "model": "tiny", "prompt": "hi", "max_tokens": 80, "ignore_eos": True}))

        thread = threading.Thread(target=ask)
        thread.start()
        while engine.running == 0 and thread.is_alive():
            time.sleep(0.002)
        server.should_exit = True  # what SIGTERM / Ctrl-C do
        thread.join(60)
    assert replies[0].status_code == 200
    assert replies[0].json()["usage"]["completion_tokens"] == 80


class _Slow:
    """The tiny model at 10 ms a step, so a request outlives its client."""

    def __init__(self, inner):
        self.inner, self.generation_config = inner, inner.generation_config

    def __call__(self, **kwargs):
        time.sleep(0.01)
        return self.inner(**kwargs)


def test_plain_request_whose_client_hangs_up_is_cancelled(tiny_loaded):
    import dataclasses

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    engine = Engine({"tiny": dataclasses.replace(tiny_loaded, model=_Slow(tiny_loaded.model))})
    with run_server(create_app(engine)) as (url, _):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", timeout=0.3,
                       json={"model": "tiny", "prompt": "x", "max_tokens": 250, "ignore_eos": True})
        deadline = time.monotonic() + 5
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.running == 0
        assert engine.stats.decoded_tokens < 200  # of 250 asked: about 1 s of 2.5 s ran


def test_streamed_n_and_logprobs(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, n=2, stream=True,
                                                 temperature=0.9, seed=5))
    roles = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    finished = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(roles) == [0, 1] and sorted(finished) == [0, 1]
    pieces = list(client.completions.create(model="tiny", prompt="hello", max_tokens=5, logprobs=1, stream=True,
                                            temperature=0, extra_body={"ignore_eos": True}))
    tokens = [t for p in pieces if p.choices and p.choices[0].logprobs for t in p.choices[0].logprobs.tokens]
    assert len(tokens) == 5  # one logprob entry per generated token, streamed as they come


def test_tokenize_messages_counts_the_rendered_chat(served, tiny_loaded):
    counted = httpx.post(f"{served.url}/tokenize", json={"messages": CHAT}, headers=AUTH).json()
    reply = openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY).chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=1)
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

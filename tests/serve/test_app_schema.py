"""The API fuzzed from its own OpenAPI document (schemathesis generates requests from /openapi.json, valid ones and
invalid ones): whatever a client sends, no 5xx, every error in OpenAI's shape, every stream ends with [DONE] and
no error event. Bounded and reproducible: a fixed number of derandomized cases per operation, no deadline."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import API_KEY

EXAMPLES_PER_OPERATION = 20
HOSTILE_VALUES_PER_FIELD = 12
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def api_schema(tiny_loaded):
    import dataclasses

    import schemathesis

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    # A 48-token context keeps generated requests short: the fuzz is about what the server accepts, not about
    # generating long replies (and a valid request with max_tokens near 256 would cost a second each).
    engine = Engine({"tiny": dataclasses.replace(tiny_loaded, context_length=48)}, max_batch_size=16, max_queue=64)
    with run_server(create_app(engine, api_keys=[API_KEY], request_timeout_s=60)) as (url, _):
        yield url, schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)


def _check(sent, response) -> None:
    """No 5xx, errors in OpenAI's shape, streams whole (`sent`: the request, shown on failure)."""
    assert response.status_code < 500, (sent, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", (sent, response.text[-300:])
        assert not any("error" in json.loads(event) for event in events[:-1]), events


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_generated_request_breaks_the_server(api_schema, mode):
    import requests
    from schemathesis import GenerationMode

    url, schema = api_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/tokenize"}
    for operation in operations:
        if mode == "negative" and not operation.body:  # nothing to get wrong in a GET without parameters
            continue

        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case) -> None:
            # The request schemathesis built, sent by requests itself: case.call() stops reading a stream after 20
            # events, and the whole stream is checked here.
            _check(case.body, requests.request(**case.as_transport_kwargs(base_url=url, headers=AUTH), timeout=60))

        call()


def _hostile_values():
    """JSON values a hostile client sends where the schema expects something else: integers past int64 (2**64
    seeds), 1e308 and non-finite floats, text with a lone UTF-16 surrogate, and lists and objects of those."""
    from hypothesis import strategies as st

    letters = st.text(st.characters(codec="utf-8"), max_size=8)
    lone_surrogate = st.builds(
        lambda a, s, b: a + s + b, letters, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), letters
    )
    integers = st.integers() | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**40])
    scalars = st.one_of(st.none(), st.booleans(), integers, st.floats(), letters, lone_surrogate)
    return (
        scalars
        | st.lists(scalars, max_size=3)
        | st.dictionaries(letters, scalars, max_size=3)
        | st.lists(
            st.dictionaries(st.sampled_from(["role", "content", "type", "text"]), scalars, max_size=3), max_size=2
        )
    )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/tokenize"])
def test_a_hostile_value_in_any_documented_field_is_never_a_5xx(api_schema, path):
    """Each field the OpenAPI document names for `path`, in turn, set to a hostile value inside an otherwise valid
    body (the seed, surrogate and 1e400 requests of issue 11 are all of this form)."""
    import requests

    url, _ = api_schema
    document = requests.get(f"{url}/openapi.json", headers=AUTH, timeout=10).json()
    body_ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    fields = sorted(document["components"]["schemas"][body_ref.rsplit("/", 1)[1]]["properties"])
    base = {
        "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        "/v1/completions": {"prompt": "hi", "max_tokens": 2},
        "/tokenize": {"prompt": "hi"},
    }[path]

    for field in fields:

        @given(value=_hostile_values())
        @settings(
            max_examples=HOSTILE_VALUES_PER_FIELD,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(value) -> None:
            body = json.dumps({"model": "tiny", **base, field: value})  # NaN and Infinity as Python's json writes
            _check(
                body,
                requests.post(
                    f"{url}{path}", data=body, timeout=60, headers={**AUTH, "Content-Type": "application/json"}
                ),
            )

        call()

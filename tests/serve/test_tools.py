"""Tool calls: rendered into the prompt, parsed back in the Hermes/Qwen and Llama-3 styles."""

from __future__ import annotations

import json

import pytest

from lmforge.serve.protocol import ApiError
from lmforge.serve.tools import parse_tool_calls, plan_tools, render_with_tools

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_hermes_calls_are_parsed_and_removed_from_content():
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")


def test_llama3_json_call_and_plain_text():
    content, calls = parse_tool_calls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert content == "" and json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert parse_tool_calls("It is sunny {not json}") == ("It is sunny {not json}", [])


def test_tool_choice_rules():
    assert plan_tools(TOOLS, "none").tools is None
    assert plan_tools(TOOLS, None).parse
    named = plan_tools(TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    assert named.prefill.endswith('"name": "get_weather", "arguments": ')
    with pytest.raises(ApiError, match="not among tools"):
        plan_tools(TOOLS, {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ApiError, match="needs tools"):
        plan_tools(None, "required")


def test_template_without_tools_gets_the_hermes_system_prompt(tiny_loaded):
    prompt = render_with_tools(tiny_loaded, [{"role": "user", "content": "Weather in Paris?"}], TOOLS)
    assert "<tools>" in prompt and '"get_weather"' in prompt and "Weather in Paris?" in prompt
    assert prompt.index("<tools>") < prompt.index("Weather in Paris?")


class _Scripted:
    """Wraps the tiny model so it 'writes' a fixed reply: random weights cannot make a tool call on their own."""

    def __init__(self, inner, script: list[int]):
        self.inner, self.script, self.step = inner, script, 0
        self.generation_config = inner.generation_config

    def __call__(self, **kwargs):
        import torch

        output = self.inner(**kwargs)
        forced = torch.full_like(output.logits[:, -1:, :], -1e9)
        forced[..., self.script[min(self.step, len(self.script) - 1)]] = 0
        self.step += 1
        output.logits = forced
        return output


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_reply_comes_back_as_tool_calls(tiny_loaded, stream):
    import dataclasses

    import openai
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    script = tiny_loaded.tokenizer.encode(reply, add_special_tokens=False) + [tiny_loaded.tokenizer.eos_token_id]
    # The Hermes tool prompt is long in byte-level tokens; rotary positions extend past the config's 256.
    scripted = dataclasses.replace(tiny_loaded, model=_Scripted(tiny_loaded.model, script), context_length=1024)
    with TestClient(create_app(Engine({"tiny": scripted}))) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=http)
        request = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": TOOLS,
            "max_tokens": 200,
        }
        if stream:
            chunks = list(client.chat.completions.create(**request, stream=True))
            assert not any(c.choices and c.choices[0].delta.content for c in chunks)  # the call is never shown as text
            calls = [
                call
                for c in chunks
                if c.choices and c.choices[0].delta.tool_calls
                for call in c.choices[0].delta.tool_calls
            ]
            finish = chunks[-1].choices[0].finish_reason
        else:
            choice = client.chat.completions.create(**request).choices[0]
            calls, finish = choice.message.tool_calls, choice.finish_reason
    assert finish == "tool_calls"
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Paris"}

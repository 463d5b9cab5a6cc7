"""Tool calls: rendered into the prompt, parsed back in the Hermes/Qwen and Llama-3 styles."""

from __future__ import annotations

import json

import pytest

from lmforge.serve.protocol import ApiError
from lmforge.serve.tools import parse_tool_calls, plan_tools, render_with_tools

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


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

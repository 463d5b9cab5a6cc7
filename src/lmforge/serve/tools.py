"""Tool calling: tools rendered into the prompt through the chat template, tool calls parsed back.

Templates that take `tools` (Qwen2.5, Hermes, Llama-3.1 ...) render them their own way. A template
that ignores `tools` (plain ChatML) gets the Hermes convention as a system message, so any model can be
prompted the same way. Replies are parsed in the two styles open models emit:

- Hermes/Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (one or more);
- Llama-3: the whole reply is a JSON object `{"name": ..., "parameters": {...}}` (optionally after `<|python_tag|>`).

`tool_choice`: "none" renders no tools and parses nothing; "auto" parses what the model wrote;
"required" and a named function prefill the reply with the start of a Hermes tool call, so the
model continues inside it (vLLM forces the same with guided decoding).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from lmforge.serve.protocol import ApiError

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_HERMES_SYSTEM = (
    "You may call one or more functions to assist with the user query. Function signatures are given in "
    "<tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\nFor each function call, return a JSON object with the "
    'function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)


@dataclass
class ToolPlan:
    """What a request's `tools`/`tool_choice` mean for rendering and parsing."""

    tools: list[dict[str, Any]] | None  # passed to the template; None when tool_choice is "none"
    prefill: str  # text the reply is started with (forced calls)
    parse: bool


def plan_tools(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> ToolPlan:
    """Validate `tools`/`tool_choice` (HTTP 400 on a bad combination) and decide how to render and parse."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise ApiError(400, "tool_choice needs tools", param="tool_choice")
        return ToolPlan(None, "", False)
    names = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise ApiError(
                400,
                f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ...}}}}",
                param=f"tools[{index}]",
            )
        names.append(function["name"])
    choice = tool_choice if tool_choice is not None else "auto"
    if choice == "none":
        return ToolPlan(None, "", False)
    if choice == "auto":
        return ToolPlan(tools, "", True)
    if choice == "required":
        return ToolPlan(tools, '<tool_call>\n{"name": "', True)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in names:
            raise ApiError(
                400,
                f"tool_choice names function {name!r}, which is not among tools ({', '.join(names)})",
                param="tool_choice",
            )
        return ToolPlan(
            [t for t in tools if t["function"]["name"] == name], f'<tool_call>\n{{"name": "{name}", "arguments": ', True
        )
    raise ApiError(
        400,
        "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
        param="tool_choice",
    )


def render_with_tools(loaded: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """The prompt for `messages`, with `tools` in the template's own way or as a Hermes system message."""
    messages = [_plain_message(m) for m in messages]
    template = loaded.chat_template
    if tools and "tools" not in template:
        system = _HERMES_SYSTEM.format(tools="\n".join(json.dumps(t) for t in tools))
        if messages and messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{system}"}
        else:
            messages.insert(0, {"role": "system", "content": system})
        tools = None
    missing = {name: "" for name in ("bos_token", "eos_token") if getattr(loaded.tokenizer, name, None) is None}
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    return loaded.tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True, **extra, **missing
    )


def _plain_message(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant's tool_calls written as Hermes text for templates without them (`message` has passed
    protocol.chat_messages: its content is one string)."""
    out = dict(message)
    if message.get("tool_calls") and not out["content"]:
        calls = [c.get("function", {}) for c in message["tool_calls"]]
        out["content"] = "\n".join(
            f"<tool_call>\n{json.dumps({'name': c.get('name'), 'arguments': _arguments(c.get('arguments'))})}"
            "\n</tool_call>"
            for c in calls
        )
    return out


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(content left after removing the calls, OpenAI tool_calls) from a model reply."""
    calls = []
    for body in _HERMES.findall(text):
        call = _as_call(body)
        if call is not None:
            calls.append(call)
    if calls:
        return _HERMES.sub("", text).strip(), calls
    stripped = text.strip().removeprefix("<|python_tag|>").strip()
    if stripped.startswith("{"):
        call = _as_call(stripped)
        if call is not None:
            return "", [call]
    return text, []


def _as_call(body: str) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {
            "name": data["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }

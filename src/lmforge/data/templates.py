"""Chat templates: one registry for training and serving, so a model is served the way it was trained.

A tokenizer's own `chat_template` always wins: it is what the model's authors trained with. For a
tokenizer without one (a base model, or our tiny test tokenizer with it removed) the built-ins
below are used; the chatml, llama-3 and qwen strings are verbatim copies of the ones shipped in
those models' tokenizer_config.json, so a model fine-tuned here behaves like the original family.
The resolved template's name is returned so a run can record what it trained with.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from lmforge.errors import NotFoundError

# The HF documentation's ChatML template (transformers chat_templating docs), also in our tiny tokenizer.
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json chat_template.
LLAMA_3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Qwen/Qwen2.5-7B-Instruct tokenizer_config.json chat_template (with its tool-calling branches).
QWEN = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""

# Stanford Alpaca's prompt (tatsu-lab/stanford_alpaca train.py PROMPT_DICT): the preamble once, then one
# Instruction/Response block per exchange; a system message replaces the preamble and each response
# ends with eos so the model learns to stop.
ALPACA = (
    "{% if messages and messages[0]['role'] == 'system' %}{% set preamble = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}"
    "{% set preamble = 'Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if loop.first %}{{ preamble + '\n\n' }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n### Response:\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {"chatml": CHATML, "llama-3": LLAMA_3, "qwen": QWEN, "alpaca": ALPACA}
# The marker that ends an assistant turn in each built-in: it must be one token for the model to learn to stop.
END_OF_TURN = {"chatml": "<|im_end|>", "llama-3": "<|eot_id|>", "qwen": "<|im_end|>"}
DEFAULT_TEMPLATE = "chatml"


@dataclass(frozen=True)
class ChatTemplate:
    """A resolved template: `name` is what a run records ("tokenizer", a built-in name or "custom")."""

    name: str
    jinja: str
    source: str  # "tokenizer" | "builtin" | "default" | "custom"

    def render(self, tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
        """The exact text the model sees for `messages`."""
        # A tokenizer without bos/eos (ours has no bos) renders them as nothing instead of failing.
        missing = {name: "" for name in ("bos_token", "eos_token") if getattr(tokenizer, name, None) is None}
        return tokenizer.apply_chat_template(
            messages, chat_template=self.jinja, tokenize=False, add_generation_prompt=add_generation_prompt, **missing
        )


def resolve_template(tokenizer: Any, name: str | None = None) -> ChatTemplate:
    """Choose the chat template for `tokenizer`.

    `name=None` uses the tokenizer's own template, or chatml when it has none (documented default);
    a built-in name forces that template; a string containing Jinja (`{%` or `{{`) is used as-is.
    """
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the "default" one is the chat template
        own = own.get("default")
    if name is None or name == "tokenizer":
        if own:
            return ChatTemplate("tokenizer", own, "tokenizer")
        if name == "tokenizer":
            raise NotFoundError(
                "this tokenizer has no chat_template; pass a template name: " + ", ".join(BUILTIN_TEMPLATES)
            )
        template = ChatTemplate(DEFAULT_TEMPLATE, BUILTIN_TEMPLATES[DEFAULT_TEMPLATE], "default")
        _warn_if_end_of_turn_split(tokenizer, template)
        return template
    if "{%" in name or "{{" in name:
        return ChatTemplate("custom", name, "custom")
    if name not in BUILTIN_TEMPLATES:
        raise NotFoundError(
            f"no chat template {name!r}; available: tokenizer, {', '.join(BUILTIN_TEMPLATES)} (or a Jinja string)"
        )
    template = ChatTemplate(name, BUILTIN_TEMPLATES[name], "builtin")
    if own and _renders_differently(tokenizer, own, template):
        warnings.warn(
            f"this tokenizer ships its own chat template but {name!r} was asked for; the model will only "
            f"answer well when it is served with {name!r} too (lmforge records it in the run)",
            stacklevel=2,
        )
    _warn_if_end_of_turn_split(tokenizer, template)
    return template


def _renders_differently(tokenizer: Any, own: str, template: ChatTemplate) -> bool:
    """Whether `template` formats a probe conversation differently from the tokenizer's own template."""
    probe = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    return ChatTemplate("tokenizer", own, "tokenizer").render(tokenizer, probe) != template.render(tokenizer, probe)


def _warn_if_end_of_turn_split(tokenizer: Any, template: ChatTemplate) -> None:
    """Warn when the template's end-of-turn marker is not one token of this tokenizer.

    A marker split into pieces is learnable but is not the eos the generator stops on: the classic
    cause of a fine-tuned model that never stops talking ("endless repetition, no stop token", a recurring
    report on the LLaMA-Factory, axolotl and unsloth issue trackers).
    """
    marker = END_OF_TURN.get(template.name)
    if marker is None:
        return
    ids = tokenizer.encode(marker, add_special_tokens=False)
    if len(ids) != 1:
        warnings.warn(
            f"chat template {template.name!r} ends turns with {marker}, which this tokenizer splits into "
            f"{len(ids)} tokens; generation will not stop on it. Use the tokenizer's own template or add "
            f"{marker} as a special token.",
            stacklevel=3,
        )

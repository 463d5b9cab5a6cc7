"""The OpenAI API's request bodies (validated at the boundary) and its response and error shapes.

Field names and meanings follow https://platform.openai.com/docs/api-reference (chat/completions,
completions, models); `top_k`, `min_p` and `repetition_penalty` are the extensions vLLM also accepts.
Unknown fields are ignored, as OpenAI-compatible servers do, so newer clients keep working.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator

DEFAULT_MAX_TOKENS = 256  # when a request names none; capped by the room left in the context


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        # A message or param quoting the client's input may hold a lone surrogate, which no JSON encoder can write
        # as UTF-8: escaped here, once, so an error about bad text cannot itself fail.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        param = param.encode("utf-8", "backslashreplace").decode("utf-8") if param is not None else None
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # vLLM's seed range; torch's generator takes [-2**63, 2**64)
# Below this a positive temperature is numerically unsafe (vLLM clamps to it "to avoid numerical errors"); here it
# is refused instead of silently changed: temperature 0 is greedy.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 2.0  # OpenAI's upper bound
# repetition_penalty divides positive logits and multiplies negative ones (CTRL): 1e-300 overflows to inf, 1e9
# flattens every logit it touches to zero; useful values sit near 1 (transformers' docs suggest 1.2).
REPETITION_PENALTY_RANGE = (1e-2, 1e2)
MAX_STOP_STRINGS = 16  # OpenAI allows 4; each is checked against the text at every step, so the count is capped
MAX_STOP_CHARS = 256
MAX_N = 16
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request


class _Body(BaseModel):
    """Request bodies: unknown fields ignored (newer clients keep working), no NaN or infinity (JSON's 1e400 parses
    to inf), booleans and integers taken only as themselves (`"logprobs": "yes"` is an error, not true)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: StrictBool = False


class ResponseFormat(_Body):
    type: str


class _Sampling(_Body):
    """Fields shared by both endpoints. Defaults are OpenAI's (temperature 1, top_p 1), not a preset."""

    model: str | None = None  # OpenAI requires it; vLLM (and this server) default to the first served model
    temperature: StrictFloat = Field(1.0, ge=0, le=MAX_TEMPERATURE)
    top_p: StrictFloat = Field(1.0, gt=0, le=1)
    top_k: StrictInt = Field(0, ge=-1)  # vLLM's: 0 or -1 = off
    min_p: StrictFloat = Field(0.0, ge=0, le=1)
    repetition_penalty: StrictFloat = Field(1.0, ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1])
    max_tokens: StrictInt | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: StrictInt = Field(1, ge=1, le=MAX_N)
    seed: StrictInt | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    ignore_eos: StrictBool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)
    presence_penalty: StrictFloat = Field(0.0, ge=-2, le=2)  # OpenAI's range
    frequency_penalty: StrictFloat = Field(0.0, ge=-2, le=2)
    response_format: ResponseFormat | None = None

    @field_validator("temperature")
    @classmethod
    def _usable_temperature(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}: smaller values overflow the softmax")
        return value

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings (got {len(stops)})")
        if any(len(stop) > MAX_STOP_CHARS for stop in stops):
            raise ValueError(f"a stop string may have at most {MAX_STOP_CHARS} characters")
        return value

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]]
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    # A string, strings, token ids, or lists of token ids (OpenAI's four forms).
    prompt: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    echo: StrictBool = False
    suffix: str | None = None
    best_of: StrictInt | None = None


class EmbeddingRequest(_Body):
    model: str | None = None
    # A string, strings, token ids, or lists of token ids (OpenAI's four forms; at most 2048 inputs, as OpenAI).
    input: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: str | None = None


class TokenizeRequest(_Body):
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: StrictBool = True


FinishReason = Literal["stop", "length", "tool_calls"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now_s() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprobs(entries: list[Any]) -> dict[str, Any]:
    """Chat's logprobs object: one entry per generated token with its top alternatives."""
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": e.bytes,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": raw} for t, lp, raw in e.top],
            }
            for e in entries
        ]
    }


def completion_logprobs(entries: list[Any]) -> dict[str, Any]:
    """The legacy completions logprobs object (tokens, token_logprobs, top_logprobs, text_offset)."""
    offsets, offset = [], 0
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t: lp for t, lp, _ in e.top} for e in entries],
        "text_offset": offsets,
    }


# OpenAI's roles; "developer" is what OpenAI's newer models call the system message, and chat templates know only
# "system", so it is rendered as one.
ROLES = ("system", "developer", "user", "assistant", "tool")


def reject_lone_surrogates(value: Any, param: str) -> None:
    """A 400 naming where a string holds a lone UTF-16 surrogate ("\\ud800" is valid JSON, but no Unicode text:
    the tokenizer cannot take it, and it used to escape as a plain-text 500)."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ApiError(
                    400,
                    f"{param} holds a lone UTF-16 surrogate ({value[error.start]!r} at character "
                    f"{error.start}), which is not valid Unicode text",
                    param=param,
                ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_lone_surrogates(key, param)
            reject_lone_surrogates(item, f"{param}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_lone_surrogates(item, f"{param}[{index}]")


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the chat template takes them: roles checked (developer becomes system), content parts joined
    into one string with newlines (as vLLM joins them), and parts a text model cannot read refused with a 400
    instead of silently dropped."""
    if not messages:
        raise ApiError(400, "messages must not be empty", param="messages")
    out = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"{where} needs a role of {', '.join(ROLES)}", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(_part_text(part, f"{where}.content[{k}]") for k, part in enumerate(content))
        elif content is not None and not isinstance(content, str):
            raise ApiError(
                400, f"{where}.content must be a string, a list of text parts, or null", param=f"{where}.content"
            )
        calls = message.get("tool_calls")
        if calls is not None and (
            not isinstance(calls, list)
            or not all(isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls)
        ):
            raise ApiError(
                400,
                f"{where}.tool_calls must be a list of {{'type': 'function', 'function': {{...}}}}",
                param=f"{where}.tool_calls",
            )
        role = "system" if message["role"] == "developer" else message["role"]
        out.append({**message, "role": role, "content": content or ""})
    return out


def _part_text(part: Any, param: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "refusal") and isinstance(part.get(kind), str):
        return part[kind]
    if kind in ("image_url", "input_audio", "file", "video_url", "audio_url"):
        raise ApiError(400, f"{param}: {kind} parts are not supported: lmforge serves text-only models", param=param)
    raise ApiError(400, f"{param} must be {{'type': 'text', 'text': ...}}", param=param)

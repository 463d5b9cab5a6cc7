"""Dataset kinds: the input layouts users bring, the canonical schema each one becomes, and the
checks that turn a bad record into a reason a user can act on.

Seven input layouts (text, alpaca, sharegpt, messages, preference, unpaired_preference,
classification) normalise to five canonical kinds, so every training stage reads one schema:

- text:                {"text": str}
- chat:                {"messages": [{"role", "content"}, ...]}   (alpaca, sharegpt, messages)
- preference:          {"prompt": [msgs ending with user], "chosen": [assistant], "rejected": [assistant]}
- unpaired_preference: {"prompt": [msgs], "completion": [assistant], "label": bool}
- classification:      {"text": str, "text_pair": str | None, "label": int}  (names kept beside)

`normalise_record` raises `RecordProblem` for a record that cannot be trained on; the loader
turns that into "file:line: reason". Nothing here touches files or imports `datasets` at import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from lmforge.errors import UserInputError

if TYPE_CHECKING:
    from datasets import Features


class Kind(StrEnum):
    """The canonical kinds; a training stage asks for one of these."""

    TEXT = "text"
    CHAT = "chat"
    PREFERENCE = "preference"
    UNPAIRED_PREFERENCE = "unpaired_preference"
    CLASSIFICATION = "classification"


# Input layout -> canonical kind. `kind=` accepts either a layout or a kind name.
FORMAT_KIND: dict[str, Kind] = {
    "text": Kind.TEXT,
    "alpaca": Kind.CHAT,
    "sharegpt": Kind.CHAT,
    "messages": Kind.CHAT,
    "preference": Kind.PREFERENCE,
    "unpaired_preference": Kind.UNPAIRED_PREFERENCE,
    "classification": Kind.CLASSIFICATION,
}
KIND_ALIASES = {"kto": "unpaired_preference", "dpo": "preference", "pretrain": "text"}
ANY_CHAT = "chat"  # a forced kind="chat" accepts any chat layout (alpaca, sharegpt, messages), detected per source

# Canonical field names a --columns mapping may target.
KNOWN_FIELDS = (
    "text", "text_pair", "label", "instruction", "input", "output", "system", "history",
    "conversations", "messages", "prompt", "chosen", "rejected", "completion",
)  # fmt: skip

# Problem reasons: the categories skip-mode counts by.
INVALID_JSON = "invalid JSON"
NOT_OBJECT = "not a JSON object"
NON_UTF8 = "non-UTF-8 bytes"
MISSING_FIELD = "missing field"
EMPTY_FIELD = "empty field"
WRONG_TYPE = "wrong type"
UNKNOWN_ROLE = "unknown role"
ROLE_ORDER = "roles out of order"
NOT_ENDING_WITH_ASSISTANT = "conversation does not end with the assistant"
LABEL_NOT_IN_SET = "label not in the label set"
PROMPT_MISMATCH = "chosen and rejected prompts differ"

# sharegpt / OpenAI role spellings -> canonical role. Tool results stay a distinct "tool" turn
# (masked like a user turn) rather than being disguised as user text.
ROLE_NAMES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "function": "tool",
    "observation": "tool",
    "tool": "tool",
}


@dataclass(frozen=True)
class OptionNames:
    """How the command reading the data lets the user set its options, so an error names one that exists:
    `lmforge data` and `lmforge eval` take --kind/--columns/--on-error, a train config has data.* keys."""

    kind: str = "--kind"
    columns: str = "--columns"
    columns_example: str = "--columns instruction=question,output=answer"
    skip: str = "pass --on-error skip to drop them into a rejects file"


CLI_OPTIONS = OptionNames()
CONFIG_OPTIONS = OptionNames(
    kind="data.kind",
    columns="data.columns",
    columns_example="data.columns: {instruction: question, output: answer}",
    skip="set data.on_error: skip to drop them (counted as rejected in RUN/data/summary.json)",
)


class RecordProblem(Exception):
    """One record that cannot be used: `reason` is the category, str(self) the full detail."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


def resolve_format(kind: str | Kind | None) -> str | None:
    """The input layout a forced `kind=` names ("chat": any chat layout), or None to detect."""
    if kind is None:
        return None
    name = kind.value if isinstance(kind, Kind) else str(kind).strip().lower().replace("-", "_")
    name = KIND_ALIASES.get(name, name)
    if name not in FORMAT_KIND and name != ANY_CHAT:
        choices = ", ".join(sorted(set(FORMAT_KIND) | {"chat"}))
        raise UserInputError(f"unknown data kind '{kind}'; choose one of: {choices}")
    return name


def detect_layout(columns: Iterable[str], options: OptionNames = CLI_OPTIONS) -> str:
    """The input layout implied by a record's (already mapped) column names."""
    names = set(columns)
    if "messages" in names:
        return "messages"
    if "conversations" in names:
        return "sharegpt"
    if {"chosen", "rejected"} <= names:
        return "preference"
    if {"completion", "label"} <= names:
        return "unpaired_preference"
    if {"instruction", "output"} <= names:
        return "alpaca"
    if {"text", "label"} <= names:
        return "classification"
    if "text" in names:
        return "text"
    shown = ", ".join(sorted(names)) or "none"
    raise UserInputError(
        f"cannot detect the data kind from columns [{shown}]; name it with {options.kind} "
        "(text, alpaca, sharegpt, messages, preference, unpaired_preference, classification) "
        f"or map your columns, e.g. {options.columns_example}"
    )


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """`"instruction=question,output=answer"` -> {"instruction": "question", "output": "answer"}
    (canonical name = the user's column name)."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            if "=" not in item:
                raise UserInputError(f"bad column mapping '{item}': write canonical=yours, e.g. instruction=question")
            canonical, _, source = item.partition("=")
            pairs.append((canonical.strip(), source.strip()))
    mapping: dict[str, str] = {}
    for canonical, source in pairs:
        if canonical not in KNOWN_FIELDS:
            raise UserInputError(
                f"unknown field '{canonical}' in column mapping; map onto one of: {', '.join(KNOWN_FIELDS)}"
            )
        if not source:
            raise UserInputError(f"column mapping for '{canonical}' names no column")
        mapping[canonical] = source
    return mapping


def apply_columns(record: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Rename the user's columns to canonical names; unmapped columns pass through."""
    if not mapping:
        return record
    renamed = dict(record)
    for canonical, source in mapping.items():
        if source in renamed:
            renamed[canonical] = renamed.pop(source)
    return renamed


def features_for(kind: Kind, label_names: list[str] | None = None) -> Features:
    """The `datasets.Features` of a canonical kind (classification labels as ClassLabel when names are known)."""
    from datasets import ClassLabel, Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    conversation = List(message)
    if kind is Kind.TEXT:
        return Features({"text": Value("string")})
    if kind is Kind.CHAT:
        return Features({"messages": conversation})
    if kind is Kind.PREFERENCE:
        return Features({"prompt": conversation, "chosen": conversation, "rejected": conversation})
    if kind is Kind.UNPAIRED_PREFERENCE:
        return Features({"prompt": conversation, "completion": conversation, "label": Value("bool")})
    label = ClassLabel(names=label_names) if label_names is not None else Value("string")
    return Features({"text": Value("string"), "text_pair": Value("string"), "label": label})


def normalise_record(record: Any, fmt: str, mapping: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One raw record (after column mapping) in layout `fmt` -> its canonical form, or RecordProblem.

    Classification labels come back as given (int or name); the loader maps them to ids once the
    label set is known.
    """
    if not isinstance(record, dict):
        raise RecordProblem(NOT_OBJECT, f"{NOT_OBJECT} (got {type(record).__name__})")
    names = dict((mapping or {}).items())
    fields = _Fields(record, names)
    if fmt == "text":
        return {"text": fields.string("text")}
    if fmt == "alpaca":
        return {"messages": _alpaca_messages(fields)}
    if fmt in ("sharegpt", "messages"):
        key = "conversations" if fmt == "sharegpt" else "messages"
        turns = _turns(fields.required(key), fields.label(key))
        system = fields.optional_string("system")
        if system and not (turns and turns[0]["role"] == "system"):
            turns.insert(0, {"role": "system", "content": system})
        _check_conversation(turns, fields.label(key))
        return {"messages": turns}
    if fmt == "preference":
        return _preference(fields)
    if fmt == "unpaired_preference":
        prompt = _prompt(fields)
        completion = _reply(fields.required("completion"), fields.label("completion"))
        return {"prompt": prompt, "completion": completion, "label": _bool_label(fields.required("label"))}
    if fmt == "classification":
        text = fields.string("text")
        pair = fields.optional_string("text_pair")
        return {"text": text, "text_pair": pair or None, "label": _class_label(fields.required("label"))}
    raise UserInputError(f"unknown data format '{fmt}'")


class _Fields:
    """Field access that says which of the user's columns is missing, empty or of the wrong type."""

    def __init__(self, record: dict[str, Any], mapping: Mapping[str, str]) -> None:
        self.record = record
        self.mapping = mapping

    def label(self, name: str) -> str:
        source = self.mapping.get(name)
        return f"'{source}' (mapped to '{name}')" if source else f"'{name}'"

    def required(self, name: str) -> Any:
        value = self.record.get(name)
        if value is None:
            raise RecordProblem(MISSING_FIELD, f"{MISSING_FIELD} {self.label(name)}")
        return value

    def string(self, name: str) -> str:
        value = self.required(name)
        if not isinstance(value, str):
            raise RecordProblem(WRONG_TYPE, f"{WRONG_TYPE}: {self.label(name)} must be a string, got {_type(value)}")
        if not value.strip():
            raise RecordProblem(EMPTY_FIELD, f"{EMPTY_FIELD} {self.label(name)}")
        return value

    def optional_string(self, name: str) -> str:
        value = self.record.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise RecordProblem(WRONG_TYPE, f"{WRONG_TYPE}: {self.label(name)} must be a string, got {_type(value)}")
        return value


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _alpaca_messages(fields: _Fields) -> list[dict[str, str]]:
    # alpaca: instruction + "\n" + input is the user turn (LLaMA-Factory's alpaca converter).
    instruction = fields.string("instruction")
    extra = fields.optional_string("input")
    output = fields.string("output")
    messages: list[dict[str, str]] = []
    system = fields.optional_string("system")
    if system.strip():
        messages.append({"role": "system", "content": system})
    history = fields.record.get("history") or []
    if not isinstance(history, list):
        raise RecordProblem(
            WRONG_TYPE, f"{WRONG_TYPE}: {fields.label('history')} must be a list of [user, assistant] pairs"
        )
    for number, pair in enumerate(history, start=1):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise RecordProblem(
                WRONG_TYPE,
                f"{WRONG_TYPE}: {fields.label('history')} item {number} must be a [user, assistant] pair of strings",
            )
        if not pair[0].strip() or not pair[1].strip():
            raise RecordProblem(EMPTY_FIELD, f"{EMPTY_FIELD} in {fields.label('history')} item {number}")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n{extra}" if extra.strip() else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return messages


def _turns(value: Any, where: str) -> list[dict[str, str]]:
    """A list of {role, content} or sharegpt {from, value} turns -> canonical messages (roles not yet ordered)."""
    if not isinstance(value, list):
        raise RecordProblem(WRONG_TYPE, f"{WRONG_TYPE}: {where} must be a list of messages, got {_type(value)}")
    if not value:
        raise RecordProblem(EMPTY_FIELD, f"{EMPTY_FIELD} {where}")
    turns = []
    for number, turn in enumerate(value, start=1):
        if not isinstance(turn, dict):
            raise RecordProblem(
                WRONG_TYPE, f"{WRONG_TYPE}: {where} message {number} must be an object, got {_type(turn)}"
            )
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role is None:
            raise RecordProblem(MISSING_FIELD, f"{MISSING_FIELD} 'role' in {where} message {number}")
        if content is None:
            raise RecordProblem(MISSING_FIELD, f"{MISSING_FIELD} 'content' in {where} message {number}")
        canonical = ROLE_NAMES.get(str(role).lower()) if isinstance(role, str) else None
        if canonical is None:
            raise RecordProblem(UNKNOWN_ROLE, f"{UNKNOWN_ROLE} '{role}' in {where} message {number}")
        if not isinstance(content, str):
            raise RecordProblem(
                WRONG_TYPE, f"{WRONG_TYPE}: content of {where} message {number} must be a string, got {_type(content)}"
            )
        if not content.strip() and canonical != "system":
            raise RecordProblem(EMPTY_FIELD, f"{EMPTY_FIELD}: {where} message {number} ({canonical}) has no content")
        turns.append({"role": canonical, "content": content})
    return turns


# Which role may follow which: system only first; user and assistant alternate; tool results
# follow an assistant (function call) turn and are answered by the assistant.
_NEXT_ROLES = {
    None: {"system", "user"},
    "system": {"user"},
    "user": {"assistant"},
    "assistant": {"user", "tool"},
    "tool": {"assistant", "tool"},
}


def _check_order(turns: list[dict[str, str]], where: str, start: str | None = None) -> None:
    previous = start
    for number, turn in enumerate(turns, start=1):
        if turn["role"] not in _NEXT_ROLES[previous]:
            after = f"after {previous}" if previous else "first"
            raise RecordProblem(ROLE_ORDER, f"{ROLE_ORDER}: {where} message {number} is {turn['role']} {after}")
        previous = turn["role"]


def _check_conversation(turns: list[dict[str, str]], where: str) -> None:
    _check_order(turns, where)
    if turns[-1]["role"] != "assistant":
        raise RecordProblem(
            NOT_ENDING_WITH_ASSISTANT, f"{NOT_ENDING_WITH_ASSISTANT}: {where} ends with a {turns[-1]['role']} turn"
        )


def _prompt(fields: _Fields) -> list[dict[str, str]]:
    """A preference prompt: a plain string becomes one user turn; a conversation must end with the user."""
    value = fields.record.get("prompt")
    if value is None and "instruction" in fields.record:  # alpaca-style preference rows
        instruction = fields.string("instruction")
        extra = fields.optional_string("input")
        value = f"{instruction}\n{extra}" if extra.strip() else instruction
    if value is None:
        raise RecordProblem(MISSING_FIELD, f"{MISSING_FIELD} {fields.label('prompt')}")
    if isinstance(value, str):
        if not value.strip():
            raise RecordProblem(EMPTY_FIELD, f"{EMPTY_FIELD} {fields.label('prompt')}")
        turns = [{"role": "user", "content": value}]
    else:
        turns = _turns(value, fields.label("prompt"))
    system = fields.optional_string("system")
    if system.strip() and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system})
    _check_order(turns, fields.label("prompt"))
    if turns[-1]["role"] != "user":
        raise RecordProblem(ROLE_ORDER, f"{ROLE_ORDER}: {fields.label('prompt')} must end with a user turn")
    return turns


def _reply(value: Any, where: str) -> list[dict[str, str]]:
    """A chosen/rejected/completion answer: a string becomes one assistant turn."""
    if isinstance(value, str):
        if not value.strip():
            raise RecordProblem(EMPTY_FIELD, f"{EMPTY_FIELD} {where}")
        return [{"role": "assistant", "content": value}]
    turns = _turns(value, where)
    _check_order(turns, where, start="user")
    if turns[-1]["role"] != "assistant":
        raise RecordProblem(
            NOT_ENDING_WITH_ASSISTANT, f"{NOT_ENDING_WITH_ASSISTANT}: {where} ends with a {turns[-1]['role']} turn"
        )
    return turns


def _split_at_last_user(turns: list[dict[str, str]], where: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    users = [index for index, turn in enumerate(turns) if turn["role"] == "user"]
    if not users:
        raise RecordProblem(MISSING_FIELD, f"{MISSING_FIELD} 'prompt' (and {where} has no user turn to take it from)")
    return turns[: users[-1] + 1], turns[users[-1] + 1 :]


def _preference(fields: _Fields) -> dict[str, Any]:
    chosen_raw = fields.required("chosen")
    rejected_raw = fields.required("rejected")
    implicit = "prompt" not in fields.record and "instruction" not in fields.record
    if implicit and isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        # TRL's implicit-prompt format: chosen/rejected are whole conversations sharing a prompt.
        chosen_full = _turns(chosen_raw, fields.label("chosen"))
        rejected_full = _turns(rejected_raw, fields.label("rejected"))
        prompt, chosen = _split_at_last_user(chosen_full, fields.label("chosen"))
        prompt_r, rejected = _split_at_last_user(rejected_full, fields.label("rejected"))
        if prompt != prompt_r:
            raise RecordProblem(
                PROMPT_MISMATCH, f"{PROMPT_MISMATCH}: chosen and rejected conversations start differently"
            )
        _check_order(prompt, fields.label("chosen"))
        for part, where in ((chosen, "chosen"), (rejected, "rejected")):
            if not part:
                raise RecordProblem(
                    NOT_ENDING_WITH_ASSISTANT, f"{NOT_ENDING_WITH_ASSISTANT}: {fields.label(where)} has no reply"
                )
            _check_order(part, fields.label(where), start="user")
            if part[-1]["role"] != "assistant":
                raise RecordProblem(NOT_ENDING_WITH_ASSISTANT, f"{NOT_ENDING_WITH_ASSISTANT}: {fields.label(where)}")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    prompt = _prompt(fields)
    return {
        "prompt": prompt,
        "chosen": _reply(chosen_raw, fields.label("chosen")),
        "rejected": _reply(rejected_raw, fields.label("rejected")),
    }


_TRUE = {"true", "1", "yes", "good", "desirable"}
_FALSE = {"false", "0", "no", "bad", "undesirable"}


def _bool_label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise RecordProblem(LABEL_NOT_IN_SET, f"{LABEL_NOT_IN_SET}: 'label' must be true or false, got {value!r}")


def _class_label(value: Any) -> int | str:
    """An int id or a label name; digit strings (CSV cells) count as ids."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise RecordProblem(
                LABEL_NOT_IN_SET, f"{LABEL_NOT_IN_SET}: label {value} is negative (unlabelled rows cannot train)"
            )
        return value
    if isinstance(value, str):
        name = value.strip()
        if not name:
            raise RecordProblem(EMPTY_FIELD, f"{EMPTY_FIELD} 'label'")
        return int(name) if name.isdigit() else name
    raise RecordProblem(WRONG_TYPE, f"{WRONG_TYPE}: 'label' must be an integer or a name, got {_type(value)}")


def to_format(record: Mapping[str, Any], kind: Kind, fmt: str, label_names: list[str] | None = None) -> dict[str, Any]:
    """A canonical record written in layout `fmt` (the inverse of normalise_record), for `data convert`.

    Classification labels are written as their names so a file read back keeps its meaning.
    """
    if kind is Kind.CLASSIFICATION:
        label = record["label"]
        name = label_names[label] if label_names is not None and isinstance(label, int) else label
        out = {"text": record["text"], "label": name}
        if record.get("text_pair") is not None:
            out["text_pair"] = record["text_pair"]
        return out
    if FORMAT_KIND.get(fmt) is not kind:
        raise UserInputError(
            f"cannot write {kind.value} data as {fmt}; a {kind.value} set converts to {_formats_of(kind)}"
        )
    if fmt == "sharegpt":
        speaker = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}
        return {"conversations": [{"from": speaker[m["role"]], "value": m["content"]} for m in record["messages"]]}
    if fmt == "alpaca":
        return _to_alpaca(record["messages"])
    return dict(record)


def _formats_of(kind: Kind) -> str:
    return ", ".join(fmt for fmt, of in FORMAT_KIND.items() if of is kind)


def _to_alpaca(messages: list[dict[str, str]]) -> dict[str, Any]:
    turns = list(messages)
    out: dict[str, Any] = {}
    if turns and turns[0]["role"] == "system":
        out["system"] = turns.pop(0)["content"]
    if any(turn["role"] == "tool" for turn in turns):
        raise RecordProblem(UNKNOWN_ROLE, "alpaca has no place for tool turns; convert to sharegpt or messages")
    pairs = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)]
    out.update({"instruction": turns[-2]["content"], "input": "", "output": turns[-1]["content"]})
    if pairs:
        out["history"] = pairs
    return out

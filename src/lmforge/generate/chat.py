"""A multi-turn chat REPL: history rendered through the model's chat template, replies streamed.

The loop reads from any text stream and writes to any text stream, so tests drive it with a script
and the CLI hands it stdin/stdout. Slash commands change the session without restarting it; a bad
command value prints its one-line error and the conversation goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from lmforge.errors import UserInputError
from lmforge.fileio import atomic_write_text
from lmforge.generate.generation import encode_prompt, generate
from lmforge.generate.load import LoadedModel
from lmforge.generate.sampling import PRESETS, SamplingParams, with_updates

HELP = (
    """commands:
  /reset            forget the conversation (the system prompt stays)
  /system TEXT      set the system prompt (empty TEXT removes it)
  /preset NAME      switch sampling to a preset: """
    + ", ".join(PRESETS)
    + """
  /params [k=v ...] show the sampling parameters, or change some (e.g. /params temperature=0.2 top_k=0)
  /save FILE        append the whole conversation, as it happened, to FILE as one JSONL record
                    ({"messages": [...]}, lmforge data format; a /system set mid-way is saved where it was set)
  /help             this text
  /quit             leave (so does end of input)"""
)
PROMPT = ">>> "


# The room a reply keeps in the context when max_new_tokens is the default: older turns are dropped until the
# prompt leaves this share of the context (or the whole default length, if smaller) for the answer.
DEFAULT_REPLY_SHARE = 0.5


@dataclass
class ChatSession:
    """The state a chat carries between turns.

    `history` is what the model sees (older turns are dropped to fit its context); `transcript` is the
    conversation as it happened, every turn and each system prompt where it was set, which /save writes.
    """

    params: SamplingParams
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)  # user/assistant turns in context, oldest first
    transcript: list[dict[str, str]] = field(default_factory=list)
    capped_noted: bool = False  # the note about a capped default reply length was shown

    def __post_init__(self) -> None:
        if self.system and not self.transcript:
            self.transcript.append({"role": "system", "content": self.system})

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def set_system(self, text: str | None) -> None:
        """A new system prompt: recorded where it was set, replacing one that no turn has used yet."""
        self.system = text
        if self.transcript and self.transcript[-1]["role"] == "system":
            self.transcript.pop()
        if text is not None or any(m["role"] == "system" for m in self.transcript):
            self.transcript.append({"role": "system", "content": text or ""})

    def reset(self) -> None:
        """Forget the conversation; the system prompt stays and starts the new one."""
        self.history.clear()
        self.transcript = [{"role": "system", "content": self.system}] if self.system else []


def chat_loop(
    loaded: LoadedModel,
    params: SamplingParams,
    *,
    input_stream: TextIO,
    output_stream: TextIO,
    system: str | None = None,
) -> ChatSession:
    """Run the REPL until /quit or end of input; returns the final session (history, params)."""
    session = ChatSession(params=params, system=system)
    write = _writer(output_stream)
    write(f"chatting with {loaded.name} (template: {loaded.chat_template_source}); /help for commands\n")
    while True:
        write(PROMPT)
        line = input_stream.readline()
        if not line:
            write("\n")
            return session
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.startswith("/"):
            try:
                if not _command(session, text, write):
                    return session
            except UserInputError as error:
                write(f"Error: {error}\n")
            continue
        try:
            _reply(loaded, session, text, write)
        except UserInputError as error:  # a turn too long for the context: say so, keep the session
            session.history.pop()
            write(f"Error: {error}\n")


def _writer(stream: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


def _command(session: ChatSession, text: str, write: Callable[[str], None]) -> bool:
    """Apply one slash command; False means leave the chat."""
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    if name in ("/quit", "/exit", "/bye"):
        return False
    if name == "/help":
        write(HELP + "\n")
    elif name == "/reset":
        session.reset()
        write("conversation cleared\n")
    elif name == "/system":
        session.set_system(argument or None)
        write(f"system prompt {'set' if argument else 'removed'}\n")
    elif name == "/preset":
        if argument not in PRESETS:
            raise UserInputError(f"no preset {argument!r}; choose one of: {', '.join(PRESETS)}")
        session.params = with_updates(session.params, **PRESETS[argument])
        write(f"preset {argument}: {_describe(session.params)}\n")
    elif name == "/save":
        if not argument:
            raise UserInputError("/save needs a file name, e.g. /save chats.jsonl")
        _save(session, Path(argument).expanduser())
        write(f"saved {len(session.transcript)} messages to {argument}\n")
    elif name == "/params":
        if argument:
            session.params = with_updates(session.params, **_parse_assignments(argument))
        write(json.dumps(session.params.model_dump()) + "\n")
    else:
        raise UserInputError(f"unknown command {name}; /help lists them")
    return True


def _save(session: ChatSession, path: Path) -> None:
    """Append the whole conversation as one record (turns dropped from the context included); the file is
    rewritten atomically."""
    if not any(m["role"] == "user" for m in session.transcript):
        raise UserInputError("nothing to save yet: the conversation is empty")
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    atomic_write_text(path, existing + json.dumps({"messages": session.transcript}, ensure_ascii=False) + "\n")


def _parse_assignments(argument: str) -> dict[str, object]:
    """`temperature=0.2 stop=["\\n"]` -> values parsed as JSON where they are JSON, else kept as text."""
    values: dict[str, object] = {}
    for item in argument.split():
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserInputError(f"/params expects key=value pairs, got {item!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def _describe(params: SamplingParams) -> str:
    return f"temperature={params.temperature} top_k={params.top_k} top_p={params.top_p} min_p={params.min_p}"


def _reply(loaded: LoadedModel, session: ChatSession, text: str, write: Callable[[str], None]) -> None:
    session.history.append({"role": "user", "content": text})
    dropped = fit_context(loaded, session)
    if dropped:
        write(f"(dropped the {dropped} oldest turns to fit the {loaded.context_length}-token context)\n")
    result = generate(loaded, session.messages(), session.params, on_text=write)
    write("\n")
    if result.notes and not session.capped_noted:
        session.capped_noted = True
        write(
            f"(the default reply length is capped to the room the prompt leaves in the "
            f"{loaded.context_length}-token context; /params max_new_tokens=N sets a fixed length)\n"
        )
    session.history.append({"role": "assistant", "content": result.text})
    session.transcript += session.history[-2:]


def fit_context(loaded: LoadedModel, session: ChatSession) -> int:
    """Drop the oldest turns until the prompt leaves room for a reply; the newest user turn always stays.

    The room is max_new_tokens when the user set it; the default is only a ceiling (generation caps it),
    so then the room is DEFAULT_REPLY_SHARE of the context, or the default length when that is smaller.
    """
    params = session.params
    reserve = params.max_new_tokens
    if "max_new_tokens" not in params.model_fields_set:
        reserve = min(reserve, int(loaded.context_length * DEFAULT_REPLY_SHARE))
    dropped = 0
    budget = loaded.context_length - reserve
    while len(session.history) > 1 and len(encode_prompt(loaded, session.messages())) > budget:
        session.history.pop(0)
        dropped += 1
        while len(session.history) > 1 and session.history[0]["role"] != "user":  # templates expect a user first
            session.history.pop(0)
            dropped += 1
    return dropped

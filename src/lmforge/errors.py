"""The errors a user can act on.

Every capability raises one of these with a one-line message that says what is wrong and,
where possible, how to fix it. The CLI turns them into that line and a non-zero exit in
exactly one place (lmforge.cli.main); anything else that escapes is a bug.
"""


class LmforgeError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code: int = 2


class UserInputError(LmforgeError):
    """A bad argument, value or combination of options."""


class NotFoundError(UserInputError):
    """A named model, GPU, dataset, file or run that does not exist."""


class ConfigError(UserInputError):
    """A config file or config value that fails validation."""


class FormatError(LmforgeError):
    """A file whose bytes do not match the format it claims or is detected as."""


class UnsafeFileError(LmforgeError):
    """A pickle-based file that the scanner could not prove safe to load."""

    exit_code = 1


class HubError(LmforgeError):
    """The model hub refused a request (a gated or private repo) or could not be reached."""


class DependencyError(LmforgeError):
    """An optional dependency or hardware (GPU, vllm, bitsandbytes) that this action needs is missing."""


def join_problems(problems: list[str], limit: int = 20) -> str:
    """One message for several problems found together (a config with three bad keys shows all three)."""
    shown = problems[:limit]
    more = len(problems) - len(shown)
    text = "; ".join(shown)
    return text + (f"; and {more} more" if more > 0 else "")

"""The `lmforge` command: one typer app that each capability's CLI module registers into.

Library errors (LmforgeError) become one line on stderr and a non-zero exit here, and only here.
"""

from __future__ import annotations

import errno
import importlib
import logging
from typing import Any

import typer
from typer.core import TyperGroup

from lmforge import __version__
from lmforge.errors import LmforgeError
from lmforge.runtime import no_hub_kernels

# Each module defines `register(app)`; imports inside commands stay lazy so `--help` is instant.
COMMAND_MODULES = [
    "lmforge.cli.plan",
    "lmforge.cli.files",
    "lmforge.cli.scan",
    "lmforge.cli.convert",
    "lmforge.cli.download",
    "lmforge.cli.compress",
    "lmforge.cli.data",
    "lmforge.cli.train",
    "lmforge.cli.generate",
    "lmforge.cli.evaluate",
    "lmforge.cli.serve",
    "lmforge.cli.quickstart",
    "lmforge.cli.ui",
]


# OSErrors that say something about the user's paths or machine (a read-only or full disk, no permission, a
# file where a folder should be), not about lmforge: reported like an LmforgeError rather than as a traceback.
_ENVIRONMENT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
}


class LmforgeGroup(TyperGroup):
    """Turns an LmforgeError raised by any subcommand into `Error: <message>` and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except LmforgeError as error:
            # typer >= 0.20 vendors its own click, so a click.ClickException would escape as a traceback.
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(error.exit_code) from error
        except OSError as error:
            if error.errno not in _ENVIRONMENT_ERRNOS:
                raise
            typer.echo(
                f"Error: {error.filename or 'a file'}: {error.strerror}; check the path and its permissions, "
                "or choose a folder you can write to",
                err=True,
            )
            raise typer.Exit(2) from error


app = typer.Typer(
    cls=LmforgeGroup,
    name="lmforge",
    help="Plan, prepare, train, evaluate, inspect, convert and serve open LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """lmforge: the whole life of an open LLM in one tool."""


for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)


def main() -> None:
    # bitsandbytes (which peft imports when it is installed) warns at import, on CPUs with AVX512-BF16, that an
    # optional kernel could not be fetched from the hub; lmforge never fetches kernels, so the advice misleads.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # torchao (which transformers imports with every model) logs, on a CPU, that its CUDA-only extensions
    # (_C_cutlass_90a, _C_mxfp8) failed to load, and makes torch warn that its own enum registration is
    # deprecated: four lines on every command that a user can do nothing about.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    no_hub_kernels()  # inherited by every process a command starts (accelerate ranks, servers)
    app()

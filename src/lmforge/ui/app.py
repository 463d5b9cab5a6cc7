"""The web app: one gradio page with a tab per capability, and the safe defaults it is served with.

Why gradio (see docs/ui.md): it is made for ML apps (LLaMA-Factory's LlamaBoard is built on it), so a
form, a streaming chat, live-updating plots, file uploads and password login are components and
events, not a hand-written front end; callbacks are plain Python functions over lmforge's library API.

Safe by default: the server binds 127.0.0.1; any other address needs `auth` (a UI that can start
processes and read files must not be open to a network); pickers and typed paths stay inside the
allowed folders (lmforge.ui.workspace); gradio's telemetry and update check are off (no network).
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from lmforge.errors import UserInputError
from lmforge.ui.workspace import Workspace

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TABS = ("plan", "data", "train", "runs", "evaluate", "chat", "files")
CSS = """
.lmf-masked { opacity: 0.4; }
.lmf-record { white-space: pre-wrap; font-family: monospace; line-height: 1.6; }
.lmf-token { border-radius: 3px; padding: 0 1px; margin: 0 1px; }
.lmf-good { color: #1a7f37; font-weight: bold; text-transform: uppercase; }
.lmf-bad { color: #cf222e; font-weight: bold; text-transform: uppercase; }
.lmf-note { color: #9a6700; font-weight: bold; }
"""


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """`USER:PASS` (the password may contain ':') as gradio's (user, password); None when not given."""
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise UserInputError("--auth must be USER:PASS with both parts non-empty, e.g. --auth admin:s3cret")
    return user, password


def check_exposure(host: str, auth: tuple[str, str] | None) -> None:
    """A non-loopback address serves every machine that can reach it: require a login for it."""
    if host not in LOOPBACK and auth is None:
        raise UserInputError(
            f"--host {host} makes the UI reachable from other machines, and it can start training "
            "and read your files: pass --auth USER:PASS too (or keep the default 127.0.0.1)"
        )


def build_app(workspace: Workspace) -> Any:
    """The gr.Blocks page; nothing is served until it is launched."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from lmforge.ui import chat_tab, data_tab, evaluate_tab, files_tab, plan_tab, runs_tab, train_tab

    builders = {
        "plan": plan_tab.build,
        "data": data_tab.build,
        "train": train_tab.build,
        "runs": runs_tab.build,
        "evaluate": evaluate_tab.build,
        "chat": chat_tab.build,
        "files": files_tab.build,
    }
    with gr.Blocks(title="lmforge", analytics_enabled=False) as app:
        roots = ", ".join(f"`{root}`" for root in workspace.roots)
        gr.Markdown(f"**lmforge** · runs in `{workspace.runs}` · pickers see: {roots}")
        with gr.Tabs():
            for name in TABS:
                with gr.Tab(name.capitalize(), id=name, elem_id=f"tab-{name}"):
                    builders[name](app, workspace)
    return app


def _warm_up() -> None:
    """Import what the tabs need (transformers, datasets) while the user opens the page, not on its first click."""
    for module in ("lmforge.train.callbacks", "lmforge.data.load", "lmforge.generate.generation"):
        importlib.import_module(module)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    runs: str = "runs",
    auth: str | None = None,
    allow: list[str] | None = None,
    block: bool = True,
) -> Any:
    """Build and serve the app (blocking unless `block=False`, which returns the running gr.Blocks)."""
    login = parse_auth(auth)
    check_exposure(host, login)
    workspace = Workspace.create(runs, allow)
    threading.Thread(target=_warm_up, daemon=True).start()
    app = build_app(workspace)
    import gradio as gr

    try:
        app.queue(default_concurrency_limit=1).launch(
            server_name=host,
            server_port=port,
            auth=login,
            share=False,
            inbrowser=False,
            show_error=True,
            allowed_paths=[str(workspace.runs)],
            prevent_thread_lock=not block,
            quiet=False,
            theme=gr.themes.Default(),
            css=CSS,
            footer_links=[],
        )
    except OSError as error:
        raise UserInputError(f"cannot serve on {host}:{port} ({error}); pass another --port") from None
    return app

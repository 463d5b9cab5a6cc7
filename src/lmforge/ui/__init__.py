"""`lmforge ui`: the whole life cycle in a browser, on the same library API the CLI uses (see docs/ui.md).

    from lmforge.ui import serve
    serve(port=7860, runs="runs")                      # blocks; http://127.0.0.1:7860

Every tab is a module (plan_tab, data_tab, train_tab, runs_tab, evaluate_tab, chat_tab, files_tab) whose
callbacks are plain functions over lmforge's library (tested without a browser) and whose `build` lays
out the gradio components; `app` assembles them and serves them with safe defaults; `jobs` starts and
watches background training runs; `workspace` keeps every path inside the allowed folders.
Names are resolved lazily so importing the package costs nothing until gradio is needed.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "serve": "lmforge.ui.app",
    "build_app": "lmforge.ui.app",
    "Workspace": "lmforge.ui.workspace",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lmforge.ui' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

"""`lmforge ui`: the whole life cycle in a browser, on the same library API the CLI uses (see docs/ui.md).

    from lmforge.ui import serve
    serve(port=7860, runs="runs")                      # blocks; http://127.0.0.1:7860

Every tab is a module (plan_tab, data_tab, train_tab, runs_tab, evaluate_tab, chat_tab, files_tab) whose
callbacks are plain functions over lmforge's library (tested without a browser) and whose `build` lays
out the gradio components; `app` assembles them and serves them with safe defaults; `jobs` starts and
watches background training runs; `workspace` keeps every path inside the allowed folders.
Importing the package is cheap: gradio, torch and transformers are imported inside the functions that use them.
"""

from lmforge.ui.app import build_app, serve
from lmforge.ui.workspace import Workspace

__all__ = ["Workspace", "build_app", "serve"]

"""Model references and the Hugging Face Hub: one resolver for every command, downloads scanned before loading.

    from lmforge.hub import locate_model, download_model
    locate_model("org/name@v1.0").path    # the snapshot folder in the HF cache (downloaded if missing)
    download_model("org/name").files       # what was fetched: sizes, formats, scan verdicts
    model_spec("org/name")                  # the planner's ModelSpec (cache, catalog, else config.json fetched)

Names load on first use (lmforge.lazy), so `import lmforge.hub` imports no huggingface_hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.hub.download import DownloadReport, Snapshot, download_model, fetch_snapshot, hub_cache_dir
    from lmforge.hub.reference import ModelRef, adapter_base, is_hub_id, local_paths, locate_base, locate_model
    from lmforge.hub.spec import model_spec

__all__ = [
    "DownloadReport",
    "ModelRef",
    "Snapshot",
    "adapter_base",
    "download_model",
    "fetch_snapshot",
    "hub_cache_dir",
    "is_hub_id",
    "local_paths",
    "locate_base",
    "locate_model",
    "model_spec",
]
__getattr__, __dir__ = lazy_exports(__name__)

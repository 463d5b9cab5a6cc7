"""Model references and the Hugging Face Hub: one resolver for every command, downloads scanned before loading.

    from lmforge.hub import locate_model, download_model
    locate_model("org/name@v1.0").path    # the snapshot folder in the HF cache (downloaded if missing)
    download_model("org/name").files       # what was fetched: sizes, formats, scan verdicts
"""

from lmforge.hub.download import DownloadReport, Snapshot, download_model, fetch_snapshot, hub_cache_dir
from lmforge.hub.reference import ModelRef, adapter_base, is_hub_id, locate_base, locate_model

__all__ = ["DownloadReport", "ModelRef", "Snapshot", "adapter_base", "download_model", "fetch_snapshot",
           "hub_cache_dir", "is_hub_id", "locate_base", "locate_model"]

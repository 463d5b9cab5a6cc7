"""Process-wide settings lmforge applies before any model loads.

transformers >= 5 "kernelizes" every model that `from_pretrained` loads when the `kernels` package is
installed (transformers 5.25 depends on it): it downloads compiled kernels from Hugging Face Hub repos
(kernels-community/rotary, ...) and runs them. That is code from the network, which lmforge never runs
unasked (the same rule as trust_remote_code), and offline it is a crash: on an H200 without network every
CUDA training run and server start failed with "Version 2 of 'kernels-community/rotary' is not available in
the local cache and Hugging Face Hub is in offline mode" (docs/gpu.md). transformers' own switch turns it
off; a user who wants hub kernels sets USE_HUB_KERNELS=1 themselves, and lmforge leaves that alone.
"""

from __future__ import annotations

import os


def no_hub_kernels() -> None:
    """Keep transformers from fetching and running hub kernels, unless the user set USE_HUB_KERNELS."""
    os.environ.setdefault("USE_HUB_KERNELS", "0")

"""The accelerator catalog: memory, bandwidth and dense peak FLOP/s, looked up by the name users type.

Figures live in catalog/gpus.json (datasheet values, dense peaks without sparsity) so they can be
checked against a datasheet line by line; this module only loads, matches and wraps them.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from lmforge.errors import NotFoundError, UserInputError

GIB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    name: str  # catalog name, lowercase-hyphenated: "a100-80g"
    display_name: str
    vendor: str
    memory_gib: float  # memory as sold (binary GiB of physical memory)
    bandwidth_gb_s: float | None  # decimal GB/s; None for a custom card of unknown speed
    bf16_tflops: float | None  # dense tensor-core peak; None where the card has no bf16
    fp16_tflops: float | None
    fp32_tflops: float | None
    price_usd_per_hour: float | None = None
    gpus_per_node: int = 8
    source: str = ""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    @property
    def bandwidth_bytes_per_second(self) -> float | None:
        return None if self.bandwidth_gb_s is None else self.bandwidth_gb_s * 1e9

    def peak_flops_per_second(self, precision: str) -> float | None:
        """Dense peak for the precision the matmuls run in: fp32 training runs on fp32 cores,
        every 16-bit mode on the tensor cores (V100/T4 have no bf16, so bf16 falls back to fp16)."""
        if precision == "fp32":
            tflops = self.fp32_tflops
        elif precision.startswith("fp16"):
            tflops = self.fp16_tflops
        else:
            tflops = self.bf16_tflops if self.bf16_tflops is not None else self.fp16_tflops
        return None if tflops is None else tflops * 1e12

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _compact(name: str) -> str:
    """'NVIDIA A100 80GB' -> 'a10080g': lowercase, vendor words and separators dropped, GB -> G."""
    text = name.lower().strip()
    text = re.sub(r"\b(nvidia|amd|geforce|instinct|tesla)\b", " ", text)
    text = re.sub(r"(\d)\s*gib?\b", r"\1g", text)
    text = re.sub(r"(\d)\s*gb\b", r"\1g", text)
    return re.sub(r"[^a-z0-9]", "", text)


@cache
def _catalog() -> tuple[tuple[Accelerator, tuple[str, ...]], ...]:
    data = json.loads(resources.files("lmforge.plan").joinpath("catalog/gpus.json").read_text("utf-8"))
    entries = []
    for raw in data["accelerators"]:
        aliases = tuple(raw.pop("aliases", []))
        entries.append((Accelerator(**raw), aliases))
    return tuple(entries)


def list_accelerators() -> list[Accelerator]:
    """Every catalog accelerator, in catalog order (consumer cards first, then data-centre)."""
    return [accelerator for accelerator, _ in _catalog()]


def get_accelerator(name: str) -> Accelerator:
    """Look up by catalog name, ignoring case and separators ("A100 80GB", "a100-80gb", "RTX4090")."""
    wanted = _compact(name)
    for accelerator, aliases in _catalog():
        if wanted in {_compact(accelerator.name), *(_compact(alias) for alias in aliases)}:
            return accelerator
    names = [accelerator.name for accelerator in list_accelerators()]
    close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise NotFoundError(
        f"Unknown GPU '{name}'.{hint} Run `lmforge gpus` for the catalog, or pass --gpu-mem GIB for another card."
    )


def custom_accelerator(memory_gib: float, base: Accelerator | None = None) -> Accelerator:
    """A card with a user-given memory size; speed figures come from `base` when one is named."""
    if not memory_gib > 0 or not math.isfinite(memory_gib):
        raise UserInputError(f"--gpu-mem must be a positive, finite number of GiB, got {memory_gib}.")
    if base is not None:
        return Accelerator(**{**asdict(base), "name": f"{base.name}-{memory_gib:g}g", "memory_gib": memory_gib})
    return Accelerator(
        name=f"custom-{memory_gib:g}g",
        display_name=f"Custom accelerator with {memory_gib:g} GiB",
        vendor="custom",
        memory_gib=memory_gib,
        bandwidth_gb_s=None,
        bf16_tflops=None,
        fp16_tflops=None,
        fp32_tflops=None,
        source="--gpu-mem",
    )

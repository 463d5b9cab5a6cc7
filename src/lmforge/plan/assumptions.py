"""The figures a plan rests on that were not measured for the run planned: printed as assumptions.

A plan mixes three kinds of numbers: counts (parameters, bytes per tensor) that follow from the model and
the setup, datasheet figures (memory, peak FLOPs, bandwidth) that are published, and assumptions: the share
of peak a run reaches, what the CUDA stack holds outside PyTorch, how much the caching allocator wastes,
what a GPU-hour costs. The last kind moves every time and memory figure, so each is printed with its value,
what it rests on and the flag that replaces it (in the table and in `--json`), never as a measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmforge.plan.hardware import Accelerator
from lmforge.plan.memory import ALLOCATOR_SLACK, ALLOCATOR_SLACK_RECOMPUTE, CUDA_CONTEXT_BYTES

# The measured overheads have no flag of their own: what a user can do about a different stack is keep more free.
_NO_FLAG = "no flag; --headroom keeps more free"


@dataclass(frozen=True)
class Assumption:
    name: str
    value: str
    basis: str  # what the value rests on
    change: str  # the flag that replaces it, or what to do where none does

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def plan_assumptions(
    task: str,
    *,
    mfu: float,
    headroom: float,
    recompute: str | None,
    accelerator: Accelerator,
    price_per_gpu_hour: float | None,
) -> list[Assumption]:
    """The assumptions behind a training (`task="train"`) or serving plan on `accelerator`."""
    found = []
    if task == "train":
        found.append(
            Assumption(
                "model FLOPs utilisation",
                f"{mfu:.0%}",
                "a typical share of peak FLOPs for tuned dense training; not measured for this model or card: "
                "time and cost scale with 1/MFU",
                "--mfu",
            )
        )
    else:
        found.append(
            Assumption(
                "decode bandwidth",
                "100% of the datasheet memory bandwidth",
                "an upper bound: decode speeds are ceilings, real kernels read below peak",
                "-",
            )
        )
        found.append(
            Assumption(
                "prefill FLOPs utilisation",
                f"{mfu:.0%}",
                "a typical share of peak FLOPs; sets the time to first token",
                "--mfu",
            )
        )
    found.append(
        Assumption(
            "CUDA context and libraries",
            f"{CUDA_CONTEXT_BYTES / 2**20:.0f} MiB per GPU",
            "measured on one H200 stack (plan/memory.py, docs/gpu.md); other drivers, CUDA versions and cards differ",
            _NO_FLAG,
        )
    )
    slack = ALLOCATOR_SLACK_RECOMPUTE if recompute == "full" else ALLOCATOR_SLACK
    found.append(
        Assumption(
            "allocator slack",
            f"+{slack:.0%} of tensor memory",
            "PyTorch's reserved minus allocated memory in docs/gpu.md's H200 runs (more under full recomputation)",
            _NO_FLAG,
        )
    )
    found.append(
        Assumption(
            "headroom",
            f"{headroom:.0%} of each GPU kept free",
            "a margin for what no model predicts (fragmentation spikes, other processes)",
            "--headroom",
        )
    )
    if task == "train":
        price = (
            "no catalog price"
            if accelerator.price_usd_per_hour is None
            else f"${accelerator.price_usd_per_hour:g} per GPU-hour"
        )
        found.append(
            Assumption(
                "price",
                price if price_per_gpu_hour is None else f"${price_per_gpu_hour:g} per GPU-hour",
                "the catalog's typical on-demand price; yours differs"
                if price_per_gpu_hour is None
                else "given with --price",
                "--price",
            )
        )
    return found

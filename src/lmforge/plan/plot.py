"""A stacked-bar PNG of a plan's per-GPU memory, with the card's capacity drawn across it.

matplotlib is imported here, inside the function, with the Agg backend: only `--plot` pays for it.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.fileio import atomic_save_figure
from lmforge.plan.hardware import GIB
from lmforge.plan.planner import Plan
from lmforge.plan.setup import CATEGORIES


def plot_breakdown(plan: Plan, path: str | Path) -> Path:
    """Write the breakdown (planned, and simulated when the plan has a simulation) as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = {"planned (per GPU)": plan.memory.bytes_by_category}
    if plan.simulation is not None:
        bars["simulated (1 GPU)"] = plan.simulation["breakdown"]
    figure, axes = plt.subplots(figsize=(2.2 + 1.6 * len(bars), 5.5))
    bottoms = [0.0] * len(bars)
    colours = plt.get_cmap("tab10")
    for index, category in enumerate(CATEGORIES):
        heights = [values.get(category, 0) / GIB for values in bars.values()]
        if not any(heights):
            continue
        axes.bar(list(bars), heights, bottom=bottoms, label=category, color=colours(index), width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    capacity = plan.accelerator.memory_bytes / GIB
    axes.axhline(capacity, color="black", linestyle="-", linewidth=1)
    axes.axhline(plan.choice.usable_bytes / GIB, color="grey", linestyle="--", linewidth=1)
    axes.set_xlim(-0.75, len(bars) - 0.25)
    axes.text(-0.7, capacity, f"{plan.accelerator.name}: {capacity:g} GiB", va="bottom", ha="left", fontsize=8)
    axes.text(
        -0.7, plan.choice.usable_bytes / GIB, "usable after headroom", va="bottom", ha="left", fontsize=7, color="grey"
    )
    axes.set_ylabel("GiB")
    layout = plan.layout
    axes.set_title(
        f"{plan.model.name} ({plan.task}) on {layout.gpus} × {plan.accelerator.name}\n"
        f"DP {layout.dp} × TP {layout.tp} × PP {layout.pp}"
        + (f", ZeRO-{layout.zero_stage}" if plan.task == "train" else ""),
        fontsize=9,
    )
    axes.set_ylim(0, max(max(bottoms), capacity) * 1.12)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=120)

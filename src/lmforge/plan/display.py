"""How the planner's figures are written for people: one place for the CLI's tables and the web UI's."""

from __future__ import annotations


def duration_text(seconds: float | None) -> str:
    """12.5 ms, 40.1 s, 34.7 h, 8.7 days: the unit a reader compares at a glance ('-' when unknown)."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 3600:
        return f"{seconds:.1f} s"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def count_text(params: int) -> str:
    """8.03B, 41.9M, 20.5K: parameter counts the way model cards write them."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if params >= scale:
            return f"{params / scale:,.3g}{suffix}" if params < 100 * scale else f"{params / scale:,.0f}{suffix}"
    return str(params)


def money_text(value: float | None) -> str:
    """$8,578 or $83.08: cents only where they matter ('-' when unknown)."""
    return "-" if value is None else f"${value:,.0f}" if value >= 100 else f"${value:,.2f}"

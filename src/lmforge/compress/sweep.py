"""`lmforge compress sweep`: one method at several settings into OUT/<setting>, then one quality report.

quantize   values are methods:      gguf-q8_0,gguf-q4_k_m,bnb-nf4
prune      values are sparsities:   0.25,0.5,0.75   (options: method, pattern, structure)
factorize  values are energies:     0.99,0.95,0.9
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmforge.errors import UserInputError

KINDS = ("quantize", "prune", "factorize")


def sweep(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    kind: str,
    values: list[str],
    options: dict[str, Any] | None = None,
    report_options: dict[str, Any] | None = None,
) -> Any:
    """Compress `model` once per value, then measure the original and every result in one report
    (written to OUT/report.*); returns the QualityReport."""
    from lmforge.compress.factorize import factorize
    from lmforge.compress.prune import prune
    from lmforge.compress.quantize import quantize
    from lmforge.compress.report import compare, write_quality_report

    if kind not in KINDS:
        raise UserInputError(f"unknown sweep {kind!r}; choose one of {', '.join(KINDS)}")
    if not values:
        raise UserInputError("--values needs at least one setting")
    folder = Path(out)
    options = dict(options or {})
    results: list[tuple[str, str]] = []
    for value in values:
        if kind == "quantize":
            target = folder / (f"{value}.gguf" if value.startswith("gguf-") else value)
            quantize(model, target, method=value)
            results.append((str(target), value))
            continue
        try:
            number = float(value)
        except ValueError:
            raise UserInputError(f"{kind} sweep values are numbers, got {value!r}") from None
        target = folder / f"{kind}-{value}"
        if kind == "prune":
            done = prune(model, target, sparsity=number, **options)
            label = f"prune-{done.method}-{done.structure if done.structure != 'none' else done.pattern}-{value}"
        else:
            factorize(model, target, energy=number, **options)
            label = f"svd-energy-{value}"
        results.append((str(target), label))
    report = compare(model, results, **(report_options or {}))
    write_quality_report(report, folder)
    return report

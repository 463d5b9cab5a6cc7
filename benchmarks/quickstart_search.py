"""How the quickstart's recipe is chosen: every choice on the VALIDATION split, over several seeds.

Stage by stage, each candidate setting is run with `run_quickstart(recipe=..., until=STAGE)` for every seed,
scored on the first `eval_examples` problems/pairs of the built-in validation split (never the test split
the README quotes), and the setting with the best mean is kept for the next stage (the rule of each stage is
printed with its table). Stages before the one searched are run once per seed and copied, so every
candidate starts from the same model. The test split is scored once, afterwards, by
`benchmarks/quickstart_wall.py --seeds 0 1 2` on the recipe this chooses.

    .venv/bin/python benchmarks/quickstart_search.py [--seeds 0 1 2] [--json OUT.json] [--fixed sft_lr=1e-3 ...]

`--fixed` takes a stage's setting as already chosen (by an earlier search, whose table it does not repeat):
that stage then runs once per seed with it, so a later stage's search can be rerun alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The settings tried, per stage; each entry updates the recipe (lmforge.quickstart.pipeline.Recipe).
SFT = [{"sft_lr": 5e-4}, {"sft_lr": 1e-3}, {"sft_lr": 2e-3}]
RM = [{"rm_lr": 3e-4}, {"rm_lr": 1e-3}, {"rm_lr": 2e-3}]
DPO = [
    {"dpo_lr": 5e-5, "dpo_steps": 200},
    {"dpo_lr": 1e-4, "dpo_steps": 200},
    {"dpo_lr": 2e-4, "dpo_steps": 200},
    {"dpo_lr": 1e-4, "dpo_steps": 100},
]


def _copy_until(source: Path, target: Path, keep: tuple[str, ...]) -> None:
    """A quickstart folder holding only the finished stages `keep` of `source` (their run folders and data)."""
    from lmforge.quickstart.pipeline import STATE_FILE

    shutil.copytree(source, target)
    state = json.loads((target / STATE_FILE).read_text())
    for name in list(state["stages"]):
        if name not in keep:
            del state["stages"][name]
            shutil.rmtree(target / name, ignore_errors=True)
    (target / STATE_FILE).write_text(json.dumps(state))


def _search(
    stage: str,
    candidates: list[dict[str, Any]],
    base: dict[int, Any],
    starts: dict[int, Path],
    keep: tuple[str, ...],
    root: Path,
    score: Callable[[Any], float],
) -> list[dict[str, Any]]:
    """Run every candidate from each seed's start folder up to `stage`; the figures of each, per seed."""
    from lmforge.quickstart import run_quickstart

    rows = []
    for index, change in enumerate(candidates):
        figures, folders = [], {}
        for seed, recipe in base.items():
            out = root / f"{stage}-{index}-seed{seed}"
            if starts.get(seed) is not None:
                _copy_until(starts[seed], out, keep)
            result = run_quickstart(
                out,
                resume=starts.get(seed) is not None,
                progress=False,
                recipe=dataclasses.replace(recipe, **change),
                until=stage,
            )
            figures.append(score(result))
            folders[seed] = out
        rows.append(
            {
                "change": change,
                "figures": figures,
                "mean": statistics.mean(figures),
                "range": [min(figures), max(figures)],
                "folders": folders,
            }
        )
        print(
            f"  {stage} {change}: mean {rows[-1]['mean']:.3f}, range {min(figures):.3f}-{max(figures):.3f} "
            f"({', '.join(f'{f:.3f}' for f in figures)})",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--fixed",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="a setting chosen by an earlier search (e.g. sft_lr=1e-3): its stage is not searched",
    )
    parser.add_argument("--fast", action="store_true", help="the test recipe: checks the search runs, in a minute")
    args = parser.parse_args()

    from lmforge.cli.quickstart import _quiet_libraries
    from lmforge.quickstart import pipeline

    _quiet_libraries()
    fixed = {
        key: float(value) if "." in value or "e" in value else int(value)
        for key, value in (item.split("=", 1) for item in args.fixed)
    }

    def candidates(stage: list[dict[str, Any]]) -> list[dict[str, Any]]:
        chosen = {key: value for key, value in fixed.items() if key in stage[0]}
        return [chosen] if chosen else stage

    started = time.perf_counter()
    recipe = pipeline.FAST if args.fast else pipeline.FULL
    base = {seed: dataclasses.replace(recipe, seed=seed, score_split="validation") for seed in args.seeds}
    report: dict[str, Any] = {"seeds": args.seeds, "split": "validation", "fixed": fixed}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        from lmforge.quickstart import run_quickstart

        pretrained = {}  # tokenizer, pretraining and plan do not depend on any setting searched here
        for seed, recipe in base.items():
            pretrained[seed] = root / f"pretrain-seed{seed}"
            run_quickstart(pretrained[seed], progress=False, recipe=recipe, until="plan")
        print("sft: validation exact match after SFT; rule: the highest mean", flush=True)
        sft = _search(
            "sft",
            candidates(SFT),
            base,
            pretrained,
            ("tokenizer", "pretrain", "plan"),
            root,
            lambda r: r.stages["sft"].exact_match,
        )
        best = max(sft, key=lambda row: row["mean"])
        base = {seed: dataclasses.replace(recipe, **best["change"]) for seed, recipe in base.items()}

        print("rm: reward-model pairwise accuracy on validation pairs; rule: the highest mean", flush=True)
        keep = ("tokenizer", "pretrain", "plan", "sft")
        rm = _search("rm", candidates(RM), base, best["folders"], keep, root, lambda r: r.stages["rm"].reward_accuracy)
        best_rm = max(rm, key=lambda row: row["mean"])
        base = {seed: dataclasses.replace(recipe, **best_rm["change"]) for seed, recipe in base.items()}

        print(
            "dpo: preference for the correct answer over SFT's validation mistakes after DPO; rule: the highest "
            "mean among settings whose mean validation exact match is not below SFT's; if none, the one that keeps "
            "the most exact match",
            flush=True,
        )
        keep = ("tokenizer", "pretrain", "plan", "sft", "pairs", "rm")
        dpo = _search(
            "dpo",
            candidates(DPO),
            base,
            best_rm["folders"],
            keep,
            root,
            lambda r: r.stages["dpo"].mistake_preference_accuracy or 0.0,
        )
        for row in dpo:
            states = [
                json.loads((folder / pipeline.STATE_FILE).read_text())["stages"] for folder in row["folders"].values()
            ]
            row["exact_match_mean"] = statistics.mean(s["dpo"]["exact_match"] for s in states)
            row["sft_exact_match_mean"] = statistics.mean(s["sft"]["exact_match"] for s in states)
        allowed = [row for row in dpo if row["exact_match_mean"] >= row["sft_exact_match_mean"]]
        # When every setting costs exact match, the one that costs least: DPO must not buy preference with answers.
        best_dpo = (
            max(allowed, key=lambda row: row["mean"]) if allowed else max(dpo, key=lambda row: row["exact_match_mean"])
        )
    chosen = {**best["change"], **best_rm["change"], **best_dpo["change"]}
    report.update(sft=sft, rm=rm, dpo=dpo, chosen=chosen, seconds=round(time.perf_counter() - started))
    for rows in (sft, rm, dpo):
        for row in rows:
            row["folders"] = {seed: str(folder) for seed, folder in row["folders"].items()}
    print(f"chosen on validation: {chosen} ({report['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())

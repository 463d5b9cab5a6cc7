"""report.md for a quickstart: every stage's metrics side by side, the plots, the plan and chat samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.fileio import atomic_save_figure, atomic_write_text

GIB = 2**30


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _stage_table(records: dict[str, Any]) -> list[str]:
    lines = [
        "| stage | steps | train loss | val loss | exact match (held-out) | preference accuracy (built-in "
        "pairs) | preference accuracy (SFT's mistakes) | reward-model accuracy | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in records.items():
        steps = "—" if r.steps is None else str(r.steps)
        lines.append(
            f"| {name} | {steps} | {_num(r.train_loss)} | {_num(r.eval_loss)} | {_pct(r.exact_match)} | "
            f"{_pct(r.preference_accuracy)} | {_pct(r.mistake_preference_accuracy)} | "
            f"{_pct(r.reward_accuracy)} | {r.seconds:.1f} |"
        )
    return lines


def _headline(records: dict[str, Any]) -> list[str]:
    """What each alignment stage did to the held-out figures, in one line each."""
    lines = []
    for before, after in (("pretrain", "sft"), ("sft", "dpo"), ("dpo", "rlhf")):
        if before in records and after in records and records[after].exact_match is not None:
            b, a = records[before], records[after]
            line = (
                f"- **{after}**: exact match {_pct(b.exact_match)} → {_pct(a.exact_match)} "
                f"({(a.exact_match - b.exact_match) * 100:+.1f} points), preference accuracy "
                f"{_pct(b.preference_accuracy)} → {_pct(a.preference_accuracy)}"
            )
            if b.mistake_preference_accuracy is not None and a.mistake_preference_accuracy is not None:
                line += (
                    f", on SFT's own mistakes {_pct(b.mistake_preference_accuracy)} → "
                    f"{_pct(a.mistake_preference_accuracy)}"
                )
            lines.append(line)
    return lines + [""] if lines else []


def _plot_stages(records: dict[str, Any], path: Path) -> Path:
    """Exact match and both preference accuracies after each policy stage, as grouped bars (— drawn as 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [name for name, r in records.items() if r.exact_match is not None]
    exact = [records[s].exact_match * 100 for s in stages]
    preference = [records[s].preference_accuracy * 100 for s in stages]
    mistakes = [(records[s].mistake_preference_accuracy or 0) * 100 for s in stages]
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    positions = range(len(stages))
    axis.bar([p - 0.27 for p in positions], exact, width=0.27, label="exact match")
    axis.bar(list(positions), preference, width=0.27, label="pref. acc. (built-in pairs)")
    axis.bar([p + 0.27 for p in positions], mistakes, width=0.27, label="pref. acc. (SFT's mistakes)")
    axis.set_xticks(list(positions), stages)
    axis.set_ylim(0, 100)
    axis.set_ylabel("%")
    axis.set_title("held-out scores after each stage")
    # Below the axes, so the bars stay visible.
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False, fontsize="small")
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=100)


def _plot_losses(out: Path, path: Path) -> Path:
    """Training loss of every training stage on its own panel, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.train.callbacks import read_metrics
    from lmforge.train.plots import curves

    runs = [name for name in ("pretrain", "sft", "rm", "dpo", "rlhf") if (out / name / "metrics.jsonl").is_file()]
    figure, axes = plt.subplots(1, len(runs), figsize=(3.0 * len(runs), 2.8), squeeze=False)
    for axis, name in zip(axes[0], runs, strict=True):
        train, val = curves(read_metrics(out / name / "metrics.jsonl"))
        if train:
            axis.plot(*zip(*train, strict=True), label="train")
        if val:
            axis.plot(*zip(*val, strict=True), marker="o", label="validation")
        axis.set_title(name)
        axis.set_xlabel("step")
        if train or val:
            axis.legend(fontsize="small")
    axes[0][0].set_ylabel("loss")
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=100)


def render_report(recipe: Any, records: dict[str, Any], plot_names: list[str]) -> str:
    """The markdown text of report.md (pure: no file access)."""
    lines = [
        f"# lmforge quickstart ({recipe.name})",
        "",
        f"Tasks: {', '.join(recipe.tasks)} (built-in, held-out test split never trained on). "
        f"Tiny Llama: {recipe.model['num_hidden_layers']} layers × {recipe.model['hidden_size']} hidden; "
        f"LoRA rank {recipe.lora_r} for SFT, DPO and RLHF.",
        "",
        "## Stages side by side",
        "",
    ]
    lines += _headline(records) + _stage_table(records)
    lines += [
        "",
        "Exact match: greedy answer equals the reference after normalisation. Preference accuracy: the "
        "model gives the correct answer a higher log-likelihood than the wrong one, on the built-in pairs "
        "(a hand-made plausible wrong answer) and on the SFT policy's own wrong greedy answers to held-out "
        "prompts (near 0% for SFT by construction; DPO trains on its mistakes on train prompts). "
        "Reward-model accuracy: the reward model scores the correct answer above the built-in wrong one.",
        "",
    ]
    rm = records.get("rm")
    if rm is not None and rm.details.get("reward_accuracy_on_mistakes") is not None:
        lines += [
            f"The reward model on the SFT policy's own held-out mistakes: pairwise accuracy "
            f"{rm.details['reward_accuracy_on_mistakes']:.1%} (it trains on the built-in and the mined pairs).",
            "",
        ]
    dpo = records.get("dpo")
    if dpo is not None and dpo.details.get("dpo_reward_accuracy") is not None:
        lines += [
            f"DPO's own figure on its validation pairs: implicit reward accuracy "
            f"{dpo.details['dpo_reward_accuracy']:.1%} (log-ratio to the SFT reference ranks chosen first).",
            "",
        ]
    lines += [f"![{name}](plots/{name})" for name in plot_names] + [""]
    pairs = records.get("pairs")
    if pairs is not None:
        lines += [
            "## Pairs mined from the SFT policy's mistakes",
            "",
            "| split | prompts | wrong | wrong but empty (no pair) | pairs | topped up with built-in pairs |",
            "|---|---|---|---|---|---|",
        ]
        for split, c in pairs.details.items():
            lines.append(
                f"| {split} | {c['answers']} | {c['mistakes']} | {c['empty']} | {c['pairs']} | {c['topped_up']} |"
            )
        lines.append("")

    plan = records.get("plan")
    if plan is not None:
        lines += [
            "## Plan: this recipe on the tiny model and on a 7B model",
            "",
            "| model | params | trainable | memory per device | GPUs | fits | time for the SFT tokens |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, row in plan.details.items():
            seconds = row.get("wall_seconds")
            time_text = "—" if seconds is None else f"{seconds:.1f} s"
            fits = "yes" if row["fits"] else "no"
            lines.append(
                f"| {label} | {row['params_total']:,} | {row['params_trainable']:,} | "
                f"{row['per_gpu_bytes'] / GIB:.3f} GiB | {row['gpus']} × {row['gpu']} | {fits} | "
                f"{time_text} |"
            )
        lines.append("")
    export = records.get("export")
    if export is not None:
        d = export.details
        lines += [
            "## Export",
            "",
            f"- safetensors: `{d['safetensors_dir']}` ({d['safetensors_bytes']:,} bytes)",
            f"- GGUF f16: `{d['gguf_file']}` ({d['gguf_bytes']:,} bytes, {d['gguf_tensors_read_back']} tensors "
            f"read back, architecture {d['gguf_architecture']})",
            "",
        ]
    chat = records.get("chat")
    if chat is not None:
        lines += ["## Chat samples", "", "| preset | prompt | reply | correct |", "|---|---|---|---|"]
        for s in chat.details["samples"]:
            reply = s["reply"].strip().replace("\n", " ").replace("|", "\\|")
            lines.append(f"| {s['preset']} | {s['prompt']} | {reply} | {s['reference']} |")
        lines.append("")
    return "\n".join(lines)


def write_quickstart_report(out: Path, recipe: Any, records: dict[str, Any]) -> dict[str, Any]:
    """report.md and plots/*.png under `out`; returns their paths."""
    plots = [_plot_stages(records, out / "plots" / "stages.png"), _plot_losses(out, out / "plots" / "losses.png")]
    report = out / "report.md"
    atomic_write_text(report, render_report(recipe, records, [p.name for p in plots]))
    return {"report": report, "plots": plots}

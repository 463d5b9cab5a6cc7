"""The quickstart pipeline: the whole life of a tiny model on a CPU, nothing downloaded.

tokenizer -> pretrain -> plan -> sft (LoRA) -> pairs -> rm -> dpo (LoRA) -> rlhf (GRPO) -> export -> chat -> report

Every stage is a call into an existing capability (lmforge.data, .train, .plan, .evaluate,
.generate, .files.convert); this module only chooses the recipe and keeps the record. After each
model stage the policy is scored on held-out built-in problems (split "test", never trained on):
greedy exact match, preference accuracy (does the model give the correct answer a higher
log-likelihood than the built-in plausible wrong one) and, from SFT on, the same on the SFT policy's
own held-out mistakes ("pairs" mines them: DPO trains on the mistakes SFT makes, not on hand-made
wrong answers the policy already ranks last).

OUT/quickstart.json records each finished stage with its metrics, so `resume=True` skips finished
stages and continues an interrupted training stage from its last checkpoint (run_training(resume=True)).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import UserInputError
from lmforge.fileio import atomic_write_json, atomic_write_text

STATE_FILE = "quickstart.json"
STAGES = ("tokenizer", "pretrain", "plan", "sft", "pairs", "rm", "dpo", "rlhf", "export", "chat", "report")
POLICY_STAGES = ("pretrain", "sft", "dpo", "rlhf")  # the chain of causal models scored after each stage
CHAT_PRESETS = ("precise", "creative")


@dataclass(frozen=True)
class Recipe:
    """Every size, step count and learning rate of one quickstart, in one place."""

    name: str
    tasks: tuple[str, ...]
    model: dict[str, Any]
    vocab_size: int
    corpus_examples: int
    sft_examples: int
    pref_examples: int
    eval_examples: int  # held-out problems scored after each stage
    pretrain_steps: int
    pretrain_lr: float
    sft_steps: int
    sft_lr: float
    lora_r: int
    rm_steps: int
    rm_lr: float
    dpo_steps: int
    dpo_lr: float
    dpo_beta: float
    dpo_sft_weight: float  # RPO: DPO plus this weight x NLL of the chosen answer
    rlhf_steps: int
    rlhf_lr: float
    micro_batch_size: int
    max_len: int
    save_every: int
    seed: int = 0  # weights init, data order, and which built-in problems are drawn
    # Which held-out split the figures are scored on: "test" for the figures quoted, "validation" (its first
    # eval_examples problems) while choosing a recipe, so no choice is made on the problems that are reported.
    score_split: str = "test"


# The model shape, step counts and SFT/RM/DPO learning rates were chosen on the VALIDATION split over seeds 0-2
# by benchmarks/quickstart_search.py (figures in docs/quickstart.md): SFT lr 1e-3 (mean validation exact match
# 72.7% vs 50.0% at 5e-4, 71.1% at 2e-3), reward-model lr 3e-4 (pairwise accuracy 78.9% vs 75.8% at 1e-3),
# DPO + NLL on the chosen answer at lr 1e-4 for 200 steps (every DPO setting tried lowered validation exact
# match; this one the least). The test split is scored once per seed by benchmarks/quickstart_wall.py.
FULL = Recipe(
    name="full", tasks=("word_problem", "sort", "convert"),
    model={"model_type": "llama", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
           "tie_word_embeddings": True},
    vocab_size=512, corpus_examples=3000, sft_examples=8000, pref_examples=3000, eval_examples=150,
    pretrain_steps=400, pretrain_lr=3e-3, sft_steps=1200, sft_lr=1e-3, lora_r=64,
    rm_steps=300, rm_lr=3e-4, dpo_steps=200, dpo_lr=1e-4, dpo_beta=0.1, dpo_sft_weight=1.0, rlhf_steps=8, rlhf_lr=1e-5,
    micro_batch_size=16, max_len=96, save_every=50,
)  # fmt: skip
FAST = Recipe(
    name="fast", tasks=("word_problem", "sort", "convert"),
    model={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128,
           "tie_word_embeddings": True},
    vocab_size=320, corpus_examples=64, sft_examples=64, pref_examples=32, eval_examples=6,
    pretrain_steps=4, pretrain_lr=2e-3, sft_steps=4, sft_lr=2e-3, lora_r=8,
    rm_steps=2, rm_lr=1e-4, dpo_steps=4, dpo_lr=5e-4, dpo_beta=0.1, dpo_sft_weight=1.0, rlhf_steps=1, rlhf_lr=1e-5,
    micro_batch_size=8, max_len=64, save_every=2,
)  # fmt: skip


@dataclass
class StageRecord:
    """What one stage measured; None where a figure does not apply to the stage."""

    stage: str
    seconds: float
    steps: int | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    exact_match: float | None = None  # greedy, held-out problems, policy stages
    preference_accuracy: float | None = None  # log p(correct) > log p(built-in wrong answer), policy stages
    mistake_preference_accuracy: float | None = None  # log p(correct) > log p(SFT's own wrong answer), from sft on
    reward_accuracy: float | None = None  # rm: pairwise accuracy of the reward model on held-out pairs
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuickstartResult:
    out_dir: Path
    recipe: str
    seconds: float
    stages: dict[str, StageRecord]
    report_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "recipe": self.recipe,
            "seconds": self.seconds,
            "report": str(self.report_path),
            "stages": {k: asdict(v) for k, v in self.stages.items()},
        }


@dataclass
class _Context:
    out: Path
    recipe: Recipe
    console: Any
    progress: bool
    records: dict[str, StageRecord]
    until: str | None = None

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def run_quickstart(
    out: str | Path = "runs/quickstart",
    *,
    resume: bool = False,
    fast: bool = False,
    progress: bool = True,
    recipe: Recipe | None = None,
    until: str | None = None,
) -> QuickstartResult:
    """Run (or with `resume`, continue) the quickstart into `out`; returns every stage's metrics.

    `recipe` replaces the built-in one (FAST with `fast`, else FULL), e.g. to try other learning rates;
    `until` stops after that stage (a later call with resume=True continues from there)."""
    import torch
    from rich.console import Console

    recipe = recipe or (FAST if fast else FULL)
    if recipe.score_split not in ("validation", "test"):
        raise UserInputError(f"recipe score_split {recipe.score_split!r}: choose validation or test")
    if until is not None and until not in STAGES:
        raise UserInputError(f"until {until!r}: choose one of {', '.join(STAGES)}")
    out_dir = Path(out)
    records = _load_state(out_dir, recipe, resume)
    console = Console(quiet=not progress)
    ctx = _Context(out_dir, recipe, console, progress, records, until)
    threads = torch.get_num_threads()
    # Matrices this small gain nothing from a second thread; on a busy 2-core box two threads per process
    # oversubscribe the cores and training ran 10x slower (measured: 430 vs 23,000 tokens/s).
    torch.set_num_threads(1)
    try:
        return _run_stages(ctx)
    finally:
        torch.set_num_threads(threads)


def _run_stages(ctx: _Context) -> QuickstartResult:
    console, records = ctx.console, ctx.records
    started = time.perf_counter()
    steps: dict[str, Callable[[_Context], StageRecord]] = {
        "tokenizer": _tokenizer,
        "pretrain": _pretrain,
        "plan": _plan,
        "sft": _sft,
        "pairs": _pairs,
        "rm": _rm,
        "dpo": _dpo,
        "rlhf": _rlhf,
        "export": _export,
        "chat": _chat,
        "report": _report,
    }
    for number, name in enumerate(STAGES, 1):
        if name in records:
            console.print(f"[dim][{number}/{len(STAGES)}] {name}: done already, skipped[/]")
            continue
        console.rule(f"[bold][{number}/{len(STAGES)}] {name}")
        stage_started = time.perf_counter()
        record = steps[name](ctx)
        record.seconds = round(time.perf_counter() - stage_started, 2)
        records[name] = record
        _save_state(ctx)
        console.print(_summary_line(record))
        if name == ctx.until:
            break
    total = round(sum(r.seconds for r in records.values()), 2)
    console.print(
        f"[bold green]quickstart finished[/] in {time.perf_counter() - started:.0f} s "
        f"(all stages {total:.0f} s); report: {ctx.path('report.md')}"
    )
    return QuickstartResult(ctx.out, ctx.recipe.name, total, records, ctx.path("report.md"))


def _summary_line(record: StageRecord) -> str:
    parts = [f"{record.stage} done in {record.seconds:.1f} s"]
    for label, value in (
        ("exact match", record.exact_match),
        ("preference accuracy", record.preference_accuracy),
        ("on SFT's mistakes", record.mistake_preference_accuracy),
        ("reward accuracy", record.reward_accuracy),
    ):
        if value is not None:
            parts.append(f"{label} {value:.1%}")
    return "  ".join(parts)


def _load_state(out_dir: Path, recipe: Recipe, resume: bool) -> dict[str, StageRecord]:
    state_file = out_dir / STATE_FILE
    if not state_file.is_file():
        if resume and not out_dir.exists():
            raise UserInputError(f"--resume: {out_dir} holds no quickstart to continue; run without --resume")
        if not resume and out_dir.exists() and any(out_dir.iterdir()):
            raise UserInputError(f"--out {out_dir} is not empty; pass --resume to continue it or choose a new folder")
        return {}
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if not resume:
        raise UserInputError(
            f"{out_dir} already holds a quickstart; pass --resume to continue it, or choose a new --out folder"
        )
    if state["recipe"] != recipe.name:
        flag = "with" if state["recipe"] == "fast" else "without"
        raise UserInputError(f"{out_dir} holds a {state['recipe']} quickstart; resume it {flag} --fast")
    return {name: StageRecord(**data) for name, data in state["stages"].items()}


def _save_state(ctx: _Context) -> None:
    atomic_write_json(
        ctx.path(STATE_FILE), {"recipe": ctx.recipe.name, "stages": {k: asdict(v) for k, v in ctx.records.items()}}
    )


# --- data -----------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: Any) -> str:
    atomic_write_text(path, "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows))
    return str(path)


def _data_files(ctx: _Context) -> dict[str, str]:
    """The built-in sets narrowed to the recipe's tasks, as JSONL files the train configs point at
    (a train config names one source; the task subset is a quickstart choice). Splits are disjoint."""
    from lmforge.data.builtin import load_builtin

    recipe, folder = ctx.recipe, ctx.path("data")
    sizes = {"corpus": recipe.corpus_examples, "arith-sft": recipe.sft_examples, "arith-pref": recipe.pref_examples}
    files: dict[str, str] = {}
    for name, train_n in sizes.items():
        for split, n in (("train", train_n), ("validation", max(8, train_n // 10)), ("test", recipe.eval_examples)):
            if name == "corpus" and split == "test":
                continue
            path = folder / f"{name}-{split}.jsonl"
            if not path.is_file():
                rows = load_builtin(f"builtin:{name}", n=n, seed=recipe.seed, split=split, tasks=recipe.tasks)
                _write_jsonl(path, rows)
            files[f"{name}-{split}"] = str(path)
    return files


# --- stages ---------------------------------------------------------------------------------------


def _tokenizer(ctx: _Context) -> StageRecord:
    from lmforge.data.tokenizer import train_bpe_tokenizer

    files = _data_files(ctx)
    texts = [json.loads(line)["text"] for line in Path(files["corpus-train"]).read_text().splitlines()]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=ctx.recipe.vocab_size)
    folder = ctx.path("tokenizer")
    tokenizer.save_pretrained(str(folder))
    sample = "What is the answer? Sort the numbers 3 1 2."
    return StageRecord(
        "tokenizer",
        0.0,
        details={
            "vocab_size": len(tokenizer),
            "corpus_texts": len(texts),
            "folder": str(folder),
            "sample": sample,
            "sample_tokens": tokenizer.tokenize(sample),
        },
    )


def _train(ctx: _Context, name: str, raw: dict[str, Any]) -> Any:
    """run_training for one stage; an interrupted stage continues from its last complete checkpoint."""
    from lmforge.train import run_training, validate_config
    from lmforge.train.checkpoints import list_checkpoints
    from lmforge.train.run import finished_run

    run_dir = ctx.path(name)
    train = {
        "micro_batch_size": ctx.recipe.micro_batch_size,
        "save_every": ctx.recipe.save_every,
        "keep_last": 2,
        "log_every": 1,
        "seed": ctx.recipe.seed,
        **raw.pop("train"),
    }
    config = validate_config({"stage": name, "out": str(run_dir), "train": train, **raw})
    done = finished_run(config)
    if done is not None:
        return done
    resume = bool(list_checkpoints(run_dir / "checkpoints"))
    if resume:
        ctx.console.print(f"resuming {name} from its last checkpoint")
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # started but nothing complete to continue from: start the stage over
    return run_training(config, resume=resume, progress=ctx.progress)


def _last_losses(run_dir: Path) -> tuple[float | None, float | None]:
    return _last_metric(run_dir, "loss"), _last_metric(run_dir, "eval_loss")


def _policy_record(ctx: _Context, name: str, result: Any) -> StageRecord:
    train_loss, eval_loss = _last_losses(result.run_dir)
    exact, samples = _exact_match(ctx, result.final_dir)
    split, limit = ctx.recipe.score_split, ctx.recipe.eval_examples
    mistakes = _mistakes_file(ctx, split)  # exists once "pairs" ran, i.e. for the stages after SFT
    record = StageRecord(
        name,
        0.0,
        steps=result.steps,
        train_loss=train_loss,
        eval_loss=eval_loss,
        exact_match=exact,
        preference_accuracy=_preference_accuracy(result.final_dir, _data_files(ctx)[f"arith-pref-{split}"], limit),
        mistake_preference_accuracy=_preference_accuracy(result.final_dir, str(mistakes), limit)
        if mistakes.is_file()
        else None,
    )
    record.details = {
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "final_metrics": result.final_metrics,
        "eval_samples": samples,
    }
    return record


def _pretrain(ctx: _Context) -> StageRecord:
    recipe, files = ctx.recipe, _data_files(ctx)
    result = _train(
        ctx,
        "pretrain",
        {
            "model": {"config": dict(recipe.model), "tokenizer": str(ctx.path("tokenizer"))},
            "data": {
                "train": files["corpus-train"],
                "eval": files["corpus-validation"],
                "kind": "text",
                "max_len": recipe.max_len,
            },
            "method": {"name": "full"},
            "train": {
                "max_steps": recipe.pretrain_steps,
                "learning_rate": recipe.pretrain_lr,
                "warmup_steps": recipe.pretrain_steps // 10,
                "eval_every": recipe.save_every,
            },
        },
    )
    return _policy_record(ctx, "pretrain", result)


def _plan(ctx: _Context) -> StageRecord:
    """The planner's view of this very recipe (LoRA SFT), for the tiny model and for a 7B model."""
    from transformers import AutoConfig

    from lmforge.plan import plan_training, spec_from_config
    from lmforge.plan.throughput import TrainingTime

    recipe = ctx.recipe
    tiny = AutoConfig.from_pretrained(str(ctx.path("pretrain", "final"))).to_dict()
    options: dict[str, Any] = {
        "method": "lora",
        "lora_r": recipe.lora_r,
        "lora_alpha": recipe.lora_r * 2,
        "micro_batch_size": recipe.micro_batch_size,
        "seq_len": recipe.max_len,
        "recompute": "none",
        "levers": False,  # this recipe as it runs: no checkpointing, nothing added
        "tokens": recipe.sft_steps * recipe.micro_batch_size * recipe.max_len,
    }
    plans = {
        "tiny (this quickstart, fp32)": plan_training(
            spec_from_config(tiny, name="quickstart-tiny"), precision="fp32", gpu="a100-80g", verdicts=False, **options
        ),
        "llama-2-7b (same recipe, bf16)": plan_training(
            "llama-2-7b", precision="bf16-mixed", gpu="a100-80g", **options
        ),
    }
    rows: dict[str, dict[str, Any]] = {}
    for label, plan in plans.items():
        assert isinstance(plan.throughput, TrainingTime)  # plan_training's plans time a training run
        rows[label] = {
            "params_total": plan.model.params_total,
            "params_trainable": plan.model.params_trainable,
            "per_gpu_bytes": plan.memory.total_bytes,
            "breakdown_bytes": dict(plan.memory.bytes_by_category),
            "gpus": plan.layout.gpus,
            "gpu": plan.accelerator.display_name,
            "fits": plan.fits,
            "wall_seconds": plan.throughput.wall_seconds,
        }
    atomic_write_json(ctx.path("plan.json"), {label: plan.to_dict() for label, plan in plans.items()})
    for label, row in rows.items():
        ctx.console.print(
            f"{label}: {row['params_total']:,} params, {row['params_trainable']:,} trainable (LoRA "
            f"r={recipe.lora_r}), {row['per_gpu_bytes'] / 2**30:.3f} GiB per device"
        )
    return StageRecord("plan", 0.0, details=rows)


def _sft(ctx: _Context) -> StageRecord:
    recipe, files = ctx.recipe, _data_files(ctx)
    result = _train(
        ctx,
        "sft",
        {
            "model": {"path": str(ctx.path("pretrain"))},
            "data": {
                "train": files["arith-sft-train"],
                "eval": files["arith-sft-validation"],
                "kind": "chat",
                "max_len": recipe.max_len,
            },
            # A from-scratch 4-layer model has little to adapt: a rank near the hidden size gives LoRA room to learn.
            "method": {"name": "lora", "lora_r": recipe.lora_r, "lora_alpha": recipe.lora_r * 2, "lora_dropout": 0.0},
            "train": {
                "max_steps": recipe.sft_steps,
                "learning_rate": recipe.sft_lr,
                "warmup_steps": recipe.sft_steps // 10,
                "eval_every": recipe.save_every,
            },
        },
    )
    return _policy_record(ctx, "sft", result)


def _mistakes_file(ctx: _Context, split: str) -> Path:
    return ctx.path("data", f"arith-mistakes-{split}.jsonl")


def _reward_train_file(ctx: _Context) -> Path:
    return ctx.path("data", "arith-rm-train.jsonl")


def _pairs(ctx: _Context) -> StageRecord:
    """Preference pairs from the SFT policy's own mistakes (lmforge.evaluate.pairs): the SFT model answers each
    built-in preference prompt greedily, and every wrong answer becomes the rejected side of a pair whose chosen
    side is the reference. A train or validation split with fewer mistakes than one micro-batch is topped up
    with built-in pairs; the test split never is, since it measures how often later stages still prefer them."""
    from lmforge.evaluate.pairs import pairs_from_mistakes
    from lmforge.evaluate.run import evaluate_model, load_records
    from lmforge.generate.sampling import SamplingParams

    files, sft_final = _data_files(ctx), ctx.path("sft", "final")
    counts: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        builtin = _read_jsonl(files[f"arith-pref-{split}"])
        chats = _write_jsonl(
            ctx.path("data", f"arith-pref-{split}-chat.jsonl"),
            ({"messages": row["prompt"] + row["chosen"]} for row in builtin),
        )
        report = evaluate_model(
            str(sft_final),
            chats,
            task="generation",
            batch_size=64,
            progress=ctx.progress,
            params=SamplingParams(temperature=0, max_new_tokens=16),
        )
        mined = pairs_from_mistakes(report, load_records(chats, None, None)[0])
        rows = list(mined.pairs)
        if split != "test":
            mined_prompts = {json.dumps(pair["prompt"]) for pair in rows}
            spare = [row for row in builtin if json.dumps(row["prompt"]) not in mined_prompts]
            rows += spare[: max(0, ctx.recipe.micro_batch_size - len(rows))]
        _write_jsonl(_mistakes_file(ctx, split), rows)
        if split == "train":  # the reward model learns both kinds of wrong answer
            _write_jsonl(_reward_train_file(ctx), builtin + mined.pairs)
        counts[split] = {
            **mined.to_dict(),
            "topped_up": len(rows) - len(mined.pairs),
            "exact_match": report.summary["exact_match"],
        }
        ctx.console.print(
            f"{split}: SFT answered {mined.answers} prompts, {mined.mistakes} wrong -> "
            f"{len(mined.pairs)} pairs"
            + (f" + {counts[split]['topped_up']} built-in" if counts[split]["topped_up"] else "")
        )
    # SFT's own figure on these pairs only exists now; it is near 0 by construction (its greedy answers).
    ctx.records["sft"].mistake_preference_accuracy = _preference_accuracy(
        sft_final, str(_mistakes_file(ctx, ctx.recipe.score_split)), ctx.recipe.eval_examples
    )
    return StageRecord("pairs", 0.0, details=counts)


def _rm(ctx: _Context) -> StageRecord:
    from lmforge.evaluate.run import evaluate_model

    recipe, files = ctx.recipe, _data_files(ctx)
    result = _train(
        ctx,
        "rm",
        {
            "model": {"path": str(ctx.path("sft"))},  # the SFT LoRA is merged into the reward model's body on load
            "data": {
                "train": str(_reward_train_file(ctx)),
                "eval": files["arith-pref-validation"],
                "kind": "preference",
                "max_len": recipe.max_len,
            },
            "method": {"name": "full"},
            "train": {"max_steps": recipe.rm_steps, "learning_rate": recipe.rm_lr, "eval_every": recipe.save_every},
        },
    )
    split, limit = recipe.score_split, recipe.eval_examples
    report = evaluate_model(str(result.final_dir), files[f"arith-pref-{split}"], task="reward", limit=limit)
    details = {"mean_margin": report.summary["mean_margin"], "final_metrics": result.final_metrics}
    if _mistakes_file(ctx, split).stat().st_size:  # SFT made held-out mistakes to judge
        on_mistakes = evaluate_model(str(result.final_dir), str(_mistakes_file(ctx, split)), task="reward", limit=limit)
        details["reward_accuracy_on_mistakes"] = on_mistakes.summary["pairwise_accuracy"]
    train_loss, eval_loss = _last_losses(result.run_dir)
    return StageRecord(
        "rm",
        0.0,
        steps=result.steps,
        train_loss=train_loss,
        eval_loss=eval_loss,
        reward_accuracy=report.summary["pairwise_accuracy"],
        details=details,
    )


def _dpo(ctx: _Context) -> StageRecord:
    recipe = ctx.recipe
    result = _train(
        ctx,
        "dpo",
        {
            "model": {"path": str(ctx.path("sft"))},
            "data": {
                "train": str(_mistakes_file(ctx, "train")),
                "eval": str(_mistakes_file(ctx, "validation")),
                "kind": "preference",
                "max_len": recipe.max_len,
            },
            "method": {"name": "lora", "lora_r": recipe.lora_r, "lora_alpha": recipe.lora_r * 2, "lora_dropout": 0.0},
            "dpo": {"beta": recipe.dpo_beta, "sft_weight": recipe.dpo_sft_weight},
            "train": {"max_steps": recipe.dpo_steps, "learning_rate": recipe.dpo_lr, "eval_every": recipe.save_every},
        },
    )
    record = _policy_record(ctx, "dpo", result)
    # DPO's own figure: the implicit reward (log-ratio to the SFT reference) ranks chosen above rejected.
    record.details["dpo_reward_accuracy"] = result.final_metrics.get("eval_rewards/accuracies")
    return record


def _rlhf(ctx: _Context) -> StageRecord:
    recipe, files = ctx.recipe, _data_files(ctx)
    result = _train(
        ctx,
        "rlhf",
        {
            "model": {"path": str(ctx.path("dpo"))},
            "data": {
                "train": files["arith-pref-train"],
                "kind": "preference",
                "max_len": recipe.max_len,
                "eval_fraction": 0,
            },
            "method": {"name": "lora", "lora_r": recipe.lora_r, "lora_alpha": recipe.lora_r * 2, "lora_dropout": 0.0},
            "rlhf": {
                "reward_model": str(ctx.path("rm")),
                "algorithm": "grpo",
                "num_generations": 4,
                "max_new_tokens": 8,
                "beta": 0.04,
            },
            "train": {
                "max_steps": recipe.rlhf_steps,
                "learning_rate": recipe.rlhf_lr,
                "save_every": max(1, recipe.rlhf_steps // 2),
            },
        },
    )
    record = _policy_record(ctx, "rlhf", result)
    record.details["reward_mean"] = _last_metric(result.run_dir, "reward")
    return record


def _last_metric(run_dir: Path, key: str) -> float | None:
    from lmforge.train.callbacks import read_metrics

    values = [r[key] for r in read_metrics(run_dir / "metrics.jsonl") if key in r]
    return values[-1] if values else None


def _export(ctx: _Context) -> StageRecord:
    """The final policy merged into one safetensors model folder, then GGUF; both read back."""
    from lmforge.files.convert import convert_model

    final = ctx.path("rlhf", "final")
    merged_dir, gguf_file = ctx.path("export", "model"), ctx.path("export", "model-f16.gguf")
    for target in (merged_dir, gguf_file):
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    merged = convert_model(final, merged_dir, to="merged", progress=ctx.progress)
    gguf = convert_model(merged_dir, gguf_file, to="gguf", quant="f16", progress=ctx.progress)
    gguf_summary = _read_gguf(gguf_file)
    return StageRecord(
        "export",
        0.0,
        details={
            "safetensors_dir": str(merged_dir),
            "safetensors_bytes": merged.size_bytes,
            "gguf_file": str(gguf_file),
            "gguf_bytes": gguf.size_bytes,
            "gguf_tensors": gguf.tensor_count,
            "gguf_max_abs_error": gguf.checks.get("max_abs_error"),
            **gguf_summary,
        },
    )


def _read_gguf(path: Path) -> dict[str, Any]:
    """Read the written GGUF back with the gguf package: architecture and tensor count."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    field = reader.fields["general.architecture"]
    architecture = bytes(field.parts[field.data[0]]).decode()
    return {"gguf_architecture": architecture, "gguf_tensors_read_back": len(reader.tensors)}


def _chat(ctx: _Context) -> StageRecord:
    from lmforge.data.builtin import prompt_messages
    from lmforge.generate.generation import generate
    from lmforge.generate.load import load_model
    from lmforge.generate.sampling import sampling_params

    loaded = load_model(str(ctx.path("export", "model")))
    examples = _read_jsonl(_data_files(ctx)["arith-sft-test"])[:3]
    samples = []
    for preset in CHAT_PRESETS:
        params = sampling_params(preset, max_new_tokens=16, seed=0)
        for example in examples:
            messages = prompt_messages(example)
            reply = generate(loaded, messages, params).text
            samples.append(
                {
                    "preset": preset,
                    "prompt": messages[-1]["content"],
                    "reply": reply,
                    "reference": example["messages"][-1]["content"],
                }
            )
            ctx.console.print(
                f"[cyan]{preset:>9}[/] {messages[-1]['content']} -> [bold]{reply.strip()!r}[/] "
                f"(correct: {example['messages'][-1]['content']})"
            )
    return StageRecord(
        "chat",
        0.0,
        details={
            "samples": samples,
            "presets": {
                p: sampling_params(p).model_dump(include={"temperature", "top_k", "top_p"}) for p in CHAT_PRESETS
            },
        },
    )


def _report(ctx: _Context) -> StageRecord:
    from lmforge.quickstart.report import write_quickstart_report

    paths = write_quickstart_report(ctx.out, ctx.recipe, ctx.records)
    return StageRecord(
        "report", 0.0, details={"report": str(paths["report"]), "plots": [str(p) for p in paths["plots"]]}
    )


# --- held-out scoring -----------------------------------------------------------------------------


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _exact_match(ctx: _Context, model_dir: Path) -> tuple[float, list[dict[str, str]]]:
    """Greedy exact match on the recipe's held-out problems (score_split), through lmforge.evaluate."""
    from lmforge.evaluate.run import evaluate_model
    from lmforge.generate.sampling import SamplingParams

    report = evaluate_model(
        str(model_dir),
        _data_files(ctx)[f"arith-sft-{ctx.recipe.score_split}"],
        task="generation",
        limit=ctx.recipe.eval_examples,
        params=SamplingParams(temperature=0, max_new_tokens=16),
        progress=ctx.progress,
    )
    samples = [
        {"prompt": row.instruction, "reference": row.reference, "prediction": row.prediction} for row in report.rows[:3]
    ]
    return float(report.summary["exact_match"]), samples


def _preference_accuracy(model_dir: Path, pairs_file: str, limit: int | None = None) -> float | None:
    """lmforge.evaluate's preference_accuracy on the first `limit` pairs of a JSONL file."""
    from lmforge.evaluate.pairs import preference_accuracy

    return preference_accuracy(str(model_dir), _read_jsonl(pairs_file)[:limit])

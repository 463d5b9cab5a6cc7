"""What every stage module receives, and the pieces they share: datasets and TrainingArguments.

A stage module (pretrain.py, sft.py, ...) is one readable recipe: `TASK` says which model head it
needs, `DATA_KIND` which canonical dataset kind, `tokenize(config, tokenizer, dataset) -> Tokenized`
(where the stage tokenizes itself rather than leaving it to TRL) what it trains on, and
`build_trainer(ctx)` returns a transformers or TRL trainer. prepare.py runs `tokenize` once per data
fingerprint into RUN/data; run.py does everything around it (run folder, checkpoints, plots, model card).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import UserInputError
from lmforge.train.config import TrainConfig


def stage_module(stage: str) -> Any:
    """The recipe module of a stage (lmforge.train.sft for "sft")."""
    import importlib

    return importlib.import_module(f"lmforge.train.{stage}")


@dataclass
class StageContext:
    config: TrainConfig
    model: Any
    tokenizer: Any
    # Tokenized by the stage's `tokenize` where it has one (prepare.py, once per data fingerprint);
    # otherwise the canonical schema (lmforge.data contract), which TRL tokenizes itself.
    train_dataset: Any
    eval_dataset: Any | None
    args: dict[str, Any]  # TrainingArguments keyword arguments shared by all stages
    callbacks: list[Any] = field(default_factory=list)

    def wrap(self, trainer_class: type) -> type:
        """The stage's trainer class with lmforge's atomic, rotated checkpoints (and, with
        train.offload_activations, every training step under TRL's activation offloading)."""
        from lmforge.train.checkpoints import atomic

        wrapped = atomic(trainer_class, self.config.train.keep_last)
        return offloading_activations(wrapped) if self.config.train.offload_activations else wrapped


def offloading_activations(trainer_class: type[Any]) -> type[Any]:
    """`trainer_class` whose training steps keep saved activations in CPU RAM: TRL's OffloadActivations (the
    torchtune recipe's saved-tensor hooks, streamed back during backward), entered around each step exactly as
    TRL's own trainers do with `activation_offloading`, so every stage gets it, not only TRL's."""

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_offload_context", None) is None:
            from trl.models.activation_offloading import get_act_offloading_ctx_manager

            self._offload_context = get_act_offloading_ctx_manager(model=self.model)
        with self._offload_context:
            return trainer_class.training_step(self, *args, **kwargs)

    return type(f"Offloading{trainer_class.__name__}", (trainer_class,), {"training_step": training_step})


@dataclass
class Tokenized:
    """A stage's `tokenize` result: the dataset it trains on and what tokenization did to the examples.

    `dropped_tokens` is None where the tokenizer truncates without saying how much (classify, mlm).
    """

    dataset: Any
    examples_in: int
    dropped_examples: int = 0  # nothing left to train on after truncation
    truncated_examples: int | None = 0  # None: a slow tokenizer does not say what it cut
    dropped_tokens: int | None = 0


def tokenize_truncating(dataset: Any, encode: Any) -> Tokenized:
    """`dataset` mapped (batched) through `encode(batch) -> BatchEncoding` with truncation, counting the
    examples it cut: a fast tokenizer keeps what it cut in each encoding's `overflowing`."""
    counts = {"truncated": 0, "known": True}

    def run(batch: dict[str, list[Any]]) -> Any:
        encoded = encode(batch)
        if encoded.encodings is None:
            counts["known"] = False
        else:
            counts["truncated"] += sum(1 for e in encoded.encodings if e.overflowing)
        return encoded

    keep = {"label"}
    # Fresh, not cached: the counts come from running `encode` (prepare.py saves the result instead).
    tokenized = dataset.map(
        run, batched=True, load_from_cache_file=False, remove_columns=[c for c in dataset.column_names if c not in keep]
    )
    return Tokenized(
        tokenized,
        len(dataset),
        truncated_examples=counts["truncated"] if counts["known"] else None,
        dropped_tokens=None,
    )


@dataclass
class LoadedData:
    train: Any
    eval: Any | None
    kind: str
    label_names: list[str] | None
    train_rejected: int = 0  # records the loader refused (lmforge.data validation report)
    eval_rejected: int = 0


def _load_source(
    source: str,
    kind: str | None,
    columns: dict[str, str] | None,
    n: int | None,
    seed: int,
    split: str,
    tasks: list[str] | None = None,
    on_error: Literal["fail", "skip"] = "fail",
) -> tuple[Any, str, int]:
    """(dataset, kind, records rejected by validation); errors name the config keys (data.kind, ...)."""
    if source.startswith("builtin:"):
        from lmforge.data.builtin import get_builtin, load_builtin

        return load_builtin(source, n=n, seed=seed, split=split, tasks=tasks), get_builtin(source).kind, 0
    from lmforge.data.kinds import CONFIG_OPTIONS
    from lmforge.data.load import load_data

    result = load_data(source, kind=kind, columns=columns, on_error=on_error, names=CONFIG_OPTIONS)
    dataset = result.dataset
    if n is not None and len(dataset) > n:
        dataset = dataset.select(range(n))
    return dataset, str(getattr(result.kind, "value", result.kind)), result.report.rejected


def load_texts(config: TrainConfig) -> list[str]:
    """The `text` column of the training data (to train a tokenizer on)."""
    data = config.data
    dataset, kind, _ = _load_source(
        data.train, data.kind, data.columns, data.max_examples, config.train.seed, "train", data.tasks, data.on_error
    )
    if kind != "text":
        raise UserInputError(f"model.tokenizer bpe:N trains on text data, but {data.train} is {kind}")
    return list(dataset["text"])


def _label_names(dataset: Any) -> list[str] | None:
    feature = dataset.features.get("label")
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    if "label" in dataset.column_names:
        return [str(i) for i in sorted(set(dataset["label"]))]
    return None


def load_stage_data(config: TrainConfig, expected_kind: str | tuple[str, ...]) -> LoadedData:
    """Train and validation sets in the canonical schema the stage expects.

    A builtin set validates on its own disjoint validation split; any other source uses data.eval or
    holds out data.eval_fraction of train (seeded, grouped by content so nothing leaks).
    """
    data, seed = config.data, config.train.seed
    train, kind, train_rejected = _load_source(
        data.train, data.kind, data.columns, data.max_examples, seed, "train", data.tasks, data.on_error
    )
    allowed = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
    if kind not in allowed:
        raise UserInputError(
            f"data.train: stage {config.stage} needs {' or '.join(allowed)} data, but {data.train} is {kind}"
        )
    evaluation, eval_rejected = None, 0
    if data.eval:
        evaluation, _, eval_rejected = _load_source(
            data.eval, data.kind or kind, data.columns, None, seed, "train", data.tasks, data.on_error
        )
    elif data.eval_fraction > 0 and data.train.startswith("builtin:"):
        size = max(8, round(len(train) * data.eval_fraction))
        evaluation, _, _ = _load_source(data.train, kind, None, size, seed, "validation", data.tasks)
    elif data.eval_fraction > 0 and len(train) >= 10:
        from lmforge.data.kinds import Kind
        from lmforge.data.split import split_dataset

        # Grouped by content, so the same prompt never sits in both train and validation.
        parts = split_dataset(train, Kind(kind), ratios=(1 - data.eval_fraction, data.eval_fraction), seed=seed).splits
        train, evaluation = parts["train"], parts["test"]
    return LoadedData(
        train,
        evaluation,
        kind,
        _label_names(train) if kind == "classification" else None,
        train_rejected,
        eval_rejected,
    )


def resolved_precision(precision: str) -> str:
    """fp32, bf16 or fp16: what `auto` means on this machine, and an error where the hardware lacks the
    asked-for mixed precision. Training, the weights dtype and the plan all read it."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise UserInputError("train.precision: fp16 mixed precision needs a CUDA GPU; use bf16 or fp32 on CPU")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserInputError("train.precision: this GPU has no bf16 (pre-Ampere); use fp16 or auto")
    return precision


def precision_flags(precision: str) -> dict[str, bool]:
    """TrainingArguments' bf16/fp16 switches for train.precision."""
    resolved = resolved_precision(precision)
    return {"bf16": resolved == "bf16", "fp16": resolved == "fp16"}


# How long a process waits for the others at a collective (torch.distributed's process-group timeout,
# TrainingArguments.ddp_timeout; transformers' default too) and for rank 0's prepared data (prepare.py).
DDP_TIMEOUT_SECONDS = 1800


def training_arguments(config: TrainConfig, run_dir: Path, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments keywords for any stage (TRL configs subclass TrainingArguments)."""
    import torch

    train = config.train
    evaluating = has_eval and train.eval_every is not None
    early = train.early_stopping
    args: dict[str, Any] = {
        "output_dir": str(run_dir / "checkpoints"),
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps or -1,
        "per_device_train_batch_size": train.micro_batch_size,
        "per_device_eval_batch_size": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": train.lr_scheduler,
        "warmup_steps": train.warmup_steps,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "gradient_checkpointing": train.gradient_checkpointing,
        "seed": train.seed,
        "data_seed": train.seed,
        "logging_steps": train.log_every,
        "logging_nan_inf_filter": False,  # the NaN guard must see a NaN loss, not a filtered average
        "eval_strategy": "steps" if evaluating else "no",
        "eval_steps": train.eval_every if evaluating else None,
        "save_strategy": "steps" if train.save_every else "no",
        "save_steps": train.save_every or 500,
        "save_total_limit": None,  # rotation is checkpoints.rotate, after the atomic rename
        "load_best_model_at_end": bool(evaluating and train.save_every),
        "metric_for_best_model": early.metric if evaluating else None,
        "greater_is_better": early.mode == "max" if evaluating else None,
        "report_to": list(train.report_to) or "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "ddp_timeout": DDP_TIMEOUT_SECONDS,
        "include_num_input_tokens_seen": "non_padding",
        "use_cpu": not torch.cuda.is_available(),
        **precision_flags(train.precision),
    }
    if train.length_grouped:  # otherwise each trainer keeps its own default (TRL's KTO needs "sequential")
        args["train_sampling_strategy"] = "group_by_length"
    if args["load_best_model_at_end"] and train.save_every and train.eval_every and train.save_every % train.eval_every:
        raise UserInputError(
            f"train.save_every ({train.save_every}) must be a multiple of train.eval_every ({train.eval_every}) "
            "so the best checkpoint by the eval metric is saved"
        )
    return args

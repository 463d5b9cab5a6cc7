"""Stage classify: sequence classification (e.g. the MiniLM encoder on labelled sentences).

Reports eval accuracy next to eval loss, so early stopping can use either.
"""

from __future__ import annotations

from typing import Any

from lmforge.train.context import StageContext

TASK = "classify"
DATA_KIND = "classification"


def accuracy(prediction: Any) -> dict[str, float]:
    import numpy as np

    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def tokenize(ctx: StageContext, dataset: Any) -> Any:
    max_len = ctx.config.data.max_len

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pairs = batch.get("text_pair")
        has_pairs = pairs is not None and any(p for p in pairs)
        return ctx.tokenizer(batch["text"], [p or "" for p in pairs] if has_pairs else None,
                             truncation=True, max_length=max_len)

    keep = {"label"}
    return dataset.map(encode, batched=True, remove_columns=[c for c in dataset.column_names if c not in keep])


def build_trainer(ctx: StageContext) -> Any:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    return ctx.wrap(Trainer)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args),
        train_dataset=tokenize(ctx, ctx.train_dataset),
        eval_dataset=tokenize(ctx, ctx.eval_dataset) if ctx.eval_dataset is not None else None,
        data_collator=DataCollatorWithPadding(ctx.tokenizer),
        processing_class=ctx.tokenizer,
        compute_metrics=accuracy,
        callbacks=ctx.callbacks,
    )

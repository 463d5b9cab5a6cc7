"""Stage classify: sequence classification (e.g. the MiniLM encoder on labelled sentences).

Reports eval accuracy next to eval loss, so early stopping can use either.
"""

from __future__ import annotations

from typing import Any

from lmforge.train.config import TrainConfig
from lmforge.train.context import StageContext, Tokenized, tokenize_truncating

TASK = "classify"
DATA_KIND = "classification"


def accuracy(prediction: Any) -> dict[str, float]:
    import numpy as np

    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def tokenize(config: TrainConfig, tokenizer: Any, dataset: Any) -> Tokenized:
    max_len = config.data.max_len

    def encode(batch: dict[str, list[Any]]) -> Any:
        pairs = batch.get("text_pair")
        second = [p or "" for p in pairs] if pairs is not None and any(pairs) else None
        return tokenizer(batch["text"], second, truncation=True, max_length=max_len)

    return tokenize_truncating(dataset, encode)


def build_trainer(ctx: StageContext) -> Any:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    return ctx.wrap(Trainer)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        data_collator=DataCollatorWithPadding(ctx.tokenizer),
        processing_class=ctx.tokenizer,
        compute_metrics=accuracy,
        callbacks=ctx.callbacks,
    )

"""Stage pretrain: next-token prediction on plain text, from scratch (model.config) or continued.

The data layer concatenates the texts with eos separators and cuts blocks of data.max_len tokens
(lmforge.data.tokenize.tokenize_text), so almost no token is spent on padding; every token trains.
"""

from __future__ import annotations

from typing import Any

from lmforge.train import sft
from lmforge.train.context import StageContext

TASK = "causal"
DATA_KIND = "text"


def build_trainer(ctx: StageContext) -> Any:
    from transformers import Trainer, TrainingArguments

    from lmforge.data.tokenize import tokenize_text

    block = ctx.config.data.max_len
    train = tokenize_text(ctx.train_dataset, ctx.tokenizer, block_size=block)
    evaluation = tokenize_text(ctx.eval_dataset, ctx.tokenizer, block_size=block) if ctx.eval_dataset is not None else None
    return ctx.wrap(Trainer)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args),
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=sft.collator(ctx.tokenizer),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

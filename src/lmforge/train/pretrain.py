"""Stage pretrain: next-token prediction on plain text, from scratch (model.config) or continued.

The data layer concatenates the texts with eos separators and cuts blocks of data.max_len tokens
(lmforge.data.tokenize.tokenize_text), so almost no token is spent on padding; every token trains.
"""

from __future__ import annotations

from typing import Any

from lmforge.train import sft
from lmforge.train.config import TrainConfig
from lmforge.train.context import StageContext, Tokenized

TASK = "causal"
DATA_KIND = "text"


def tokenize(config: TrainConfig, tokenizer: Any, dataset: Any, packed: bool = False) -> Tokenized:
    """Blocks of data.max_len tokens; no document is dropped or truncated (its tail starts the next block).

    Unpacked, the blocks cut through documents and attend across their boundaries (the GPT recipe); packed,
    each document (split into max_len pieces when longer) attends only to itself."""
    from lmforge.data.pack import pack_examples
    from lmforge.data.tokenize import tokenize_documents, tokenize_text

    max_len = config.data.max_len
    if not packed:
        return Tokenized(tokenize_text(dataset, tokenizer, block_size=max_len), len(dataset))
    pieces = tokenize_documents(dataset, tokenizer, max_len=max_len).dataset
    return Tokenized(pack_examples(pieces, block_size=max_len, seed=config.train.seed), len(dataset))


def build_trainer(ctx: StageContext) -> Any:
    from transformers import Trainer, TrainingArguments

    return ctx.wrap(Trainer)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        data_collator=sft.collator(ctx.tokenizer, ctx.train_dataset),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

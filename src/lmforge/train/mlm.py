"""Stage mlm: masked language modelling for encoders (BERT-style), on plain text.

transformers' DataCollatorForLanguageModeling masks mlm.mlm_probability of the tokens (80% [MASK],
10% random, 10% kept: Devlin et al. 2019 §3.1).
"""

from __future__ import annotations

from typing import Any

from lmforge.train.config import TrainConfig
from lmforge.train.context import StageContext, Tokenized, tokenize_truncating

TASK = "mlm"
DATA_KIND = "text"


def tokenize(config: TrainConfig, tokenizer: Any, dataset: Any) -> Tokenized:
    max_len = config.data.max_len
    return tokenize_truncating(dataset, lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_len))


def build_trainer(ctx: StageContext) -> Any:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    if ctx.tokenizer.mask_token is None:
        from lmforge.errors import UserInputError

        raise UserInputError("stage mlm needs a tokenizer with a mask token (an encoder such as BERT)")
    return ctx.wrap(Trainer)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        data_collator=DataCollatorForLanguageModeling(
            ctx.tokenizer, mlm=True, mlm_probability=ctx.config.mlm.mlm_probability
        ),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

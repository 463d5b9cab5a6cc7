"""Stage sft: supervised fine-tuning on chats, loss only on assistant tokens.

lmforge.data.tokenize.tokenize_chat renders each chat with the run's template and masks every
non-assistant token with -100, so the same template is used in training and serving; a plain
transformers Trainer then trains on those labels (TRL's SFTTrainer would re-tokenize them).
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import UserInputError
from lmforge.train.context import StageContext

TASK = "causal"
DATA_KIND = "chat"


def tokenize(ctx: StageContext, dataset: Any) -> Any:
    from lmforge.data.tokenize import tokenize_chat

    data = ctx.config.data
    result = tokenize_chat(dataset, ctx.tokenizer, max_len=data.max_len, template=data.template,
                           train_on_prompt=data.train_on_prompt)
    if result.examples_out == 0:
        raise UserInputError(
            f"data.max_len {data.max_len}: none of the {result.examples_in} chats keeps an assistant token after "
            f"truncation with template {result.template} ({result.truncated_examples} truncated); raise data.max_len"
        )
    return result.dataset


def collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorForSeq2Seq

    # Pads input_ids with pad and labels with -100, so padding never enters the loss.
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def build_trainer(ctx: StageContext) -> Any:
    from transformers import Trainer, TrainingArguments

    return ctx.wrap(Trainer)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args, remove_unused_columns=False),
        train_dataset=tokenize(ctx, ctx.train_dataset),
        eval_dataset=tokenize(ctx, ctx.eval_dataset) if ctx.eval_dataset is not None else None,
        data_collator=collator(ctx.tokenizer),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

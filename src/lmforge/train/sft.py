"""Stage sft: supervised fine-tuning on chats, loss only on assistant tokens.

lmforge.data.tokenize.tokenize_chat renders each chat with the run's template and masks every
non-assistant token with -100, so the same template is used in training and serving; a plain
transformers Trainer then trains on those labels (TRL's SFTTrainer would re-tokenize them).
`tokenize` runs once per data fingerprint (prepare.py); build_trainer gets its saved result.
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import UserInputError
from lmforge.train.config import TrainConfig
from lmforge.train.context import StageContext, Tokenized

TASK = "causal"
DATA_KIND = "chat"


def tokenize(config: TrainConfig, tokenizer: Any, dataset: Any, packed: bool = False) -> Tokenized:
    """Chats with assistant-only labels; `packed` puts several into each row of data.max_len tokens."""
    from lmforge.data.pack import pack_examples
    from lmforge.data.tokenize import tokenize_chat

    data = config.data
    result = tokenize_chat(
        dataset, tokenizer, max_len=data.max_len, template=data.template, train_on_prompt=data.train_on_prompt
    )
    if result.examples_out == 0:
        raise UserInputError(
            f"data.max_len {data.max_len}: none of the {result.examples_in} chats keeps an assistant token after "
            f"truncation with template {result.template} ({result.truncated_examples} truncated); raise data.max_len"
        )
    rows = pack_examples(result.dataset, block_size=data.max_len, seed=config.train.seed) if packed else result.dataset
    return Tokenized(
        rows,
        result.examples_in,
        dropped_examples=result.dropped_examples,
        truncated_examples=result.truncated_examples,
        dropped_tokens=result.dropped_tokens,
    )


def collator(tokenizer: Any, dataset: Any) -> Any:
    """Packed rows (position_ids, no attention mask) or examples padded to the longest in the batch."""
    from transformers import DataCollatorForSeq2Seq

    from lmforge.data.pack import PackedCollator

    if "position_ids" in dataset.column_names:
        return PackedCollator(pad_token_id=tokenizer.pad_token_id)
    # Pads input_ids with pad and labels with -100, so padding never enters the loss.
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def build_trainer(ctx: StageContext) -> Any:
    from transformers import Trainer, TrainingArguments

    return ctx.wrap(Trainer)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args, remove_unused_columns=False),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        data_collator=collator(ctx.tokenizer, ctx.train_dataset),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

"""Stage kto: preference tuning from unpaired thumbs-up/down completions with TRL's KTOTrainer."""

from __future__ import annotations

from typing import Any

from lmforge.train.context import StageContext

TASK = "causal"
DATA_KIND = "unpaired_preference"


def build_trainer(ctx: StageContext) -> Any:
    from trl import KTOConfig, KTOTrainer

    return ctx.wrap(KTOTrainer)(
        model=ctx.model,
        args=KTOConfig(**ctx.args, beta=ctx.config.dpo.beta, max_length=ctx.config.data.max_len),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

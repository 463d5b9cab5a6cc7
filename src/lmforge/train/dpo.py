"""Stage dpo: direct preference optimisation on preference pairs with TRL's DPOTrainer.

The reference model is the starting model: a frozen copy for full/freeze, the base with the
adapter switched off for LoRA (no second copy in memory). Logs reward accuracies and margins.
"""

from __future__ import annotations

from typing import Any

from lmforge.train.context import StageContext

TASK = "causal"
DATA_KIND = "preference"


def build_trainer(ctx: StageContext) -> Any:
    from trl import DPOConfig, DPOTrainer

    return ctx.wrap(DPOTrainer)(
        model=ctx.model,
        args=DPOConfig(**ctx.args, beta=ctx.config.dpo.beta, max_length=ctx.config.data.max_len),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

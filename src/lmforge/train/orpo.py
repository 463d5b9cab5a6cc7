"""Stage orpo: odds-ratio preference optimisation (Hong et al. 2024), SFT and preference in one loss,
no reference model. trl 1.16 keeps ORPOTrainer in trl.experimental; its `beta` is the odds-ratio
weight (dpo.beta here, default 0.1 as in the paper)."""

from __future__ import annotations

import warnings
from typing import Any

from lmforge.train.context import StageContext

TASK = "causal"
DATA_KIND = "preference"


def build_trainer(ctx: StageContext) -> Any:
    with warnings.catch_warnings():  # docs/train.md says it is trl's experimental API; no warning per run
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ctx.wrap(ORPOTrainer)(
        model=ctx.model,
        args=ORPOConfig(**ctx.args, beta=ctx.config.dpo.beta, max_length=ctx.config.data.max_len),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

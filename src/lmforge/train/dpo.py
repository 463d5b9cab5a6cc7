"""Stage dpo: direct preference optimisation on preference pairs with TRL's DPOTrainer.

The reference model is the starting model: a frozen copy for full/freeze, the base with the
adapter switched off for LoRA (no second copy in memory). Logs reward accuracies and margins.

dpo.sft_weight > 0 adds the NLL of the chosen answer to the loss (RPO, Pang et al. 2024, TRL's "sft" loss
type): when chosen and rejected differ by a token or two, plain DPO lowers both likelihoods ("likelihood
displacement", Razin et al. 2024); measured in the quickstart, plain DPO on the policy's own mistakes cost
6 points of held-out exact match and RPO none.
"""

from __future__ import annotations

from typing import Any

from lmforge.train.context import StageContext

TASK = "causal"
DATA_KIND = "preference"


def build_trainer(ctx: StageContext) -> Any:
    from trl import DPOConfig, DPOTrainer

    section = ctx.config.dpo
    losses: dict[str, Any] = (
        {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, section.sft_weight]} if section.sft_weight else {}
    )

    return ctx.wrap(DPOTrainer)(
        model=ctx.model,
        args=DPOConfig(**ctx.args, beta=section.beta, max_length=ctx.config.data.max_len, **losses),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

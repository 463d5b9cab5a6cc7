"""Stage rm: a reward model (sequence classifier with one score) on preference pairs.

TRL's RewardTrainer applies the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected)
(Ouyang et al. 2022 eq. 1) and logs pairwise accuracy (chosen scored above rejected) as
`accuracy` / `eval_accuracy`.
"""

from __future__ import annotations

from typing import Any

from lmforge.train.context import StageContext

TASK = "classify"
DATA_KIND = "preference"
NUM_LABELS = 1


def build_trainer(ctx: StageContext) -> Any:
    from trl import RewardConfig, RewardTrainer

    ctx.model.config.pad_token_id = ctx.tokenizer.pad_token_id
    return ctx.wrap(RewardTrainer)(
        model=ctx.model,
        args=RewardConfig(**ctx.args, max_length=ctx.config.data.max_len),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )

"""train.loss: the causal-LM loss without the whole fp32 logits (the planner's `--loss`).

standard  transformers' own loss: the head's logits for every token, upcast to fp32, then cross-entropy
          (12 bytes x tokens x vocabulary at the start of backward: 6 GB for 4096 tokens of a 128k vocabulary).
chunked   trl's chunked log-prob head (trl.trainer.utils.add_fused_lm_head): the head runs in tiles of 4096
          tokens x 32768 vocabulary entries folded into per-token log-probabilities (Triton on GPUs, torch ops
          elsewhere), and backward recomputes each tile; the loss is the same mean negative log-likelihood.
fused     Liger's fused linear cross-entropy (liger-kernel, Triton): CUDA only.

Only training forwards with labels take the chunked path; evaluation and generation keep the model's own
forward, so `outputs.logits` stays available to them. lmforge.plan prices the same three (plan/memory.py).
"""

from __future__ import annotations

import functools
import types
from typing import Any

from lmforge.errors import DependencyError, UserInputError
from lmforge.plan.setup import LOSSES


def apply_loss(model: Any, loss: str) -> Any:
    """Make `model` (a transformers causal LM, before peft wraps it) compute `loss`; returns the same model."""
    if loss not in LOSSES:
        raise UserInputError(f"train.loss {loss!r} is not one of {', '.join(LOSSES)}")
    if loss == "chunked":
        _chunked(model)
    elif loss == "fused":
        _liger(model)
    return model


def _chunked(model: Any) -> None:
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)  # model(..., labels=..., fused_lm_head=True) now never builds the logits
    with_fused_head = model.forward

    # Keep the model's own signature: the Trainer reads it to decide whether to pass num_items_in_batch.
    @functools.wraps(type(model).forward)
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.training and kwargs.get("labels") is not None:
            kwargs.setdefault("fused_lm_head", True)
        return with_fused_head(*args, **kwargs)

    model.forward = types.MethodType(forward, model)


def _liger(model: Any) -> None:
    import torch

    if not torch.cuda.is_available():
        raise UserInputError(
            "train.loss: fused runs Liger's Triton kernel on CUDA GPUs only; use chunked on this machine"
        )
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as error:
        raise DependencyError(
            f"train.loss: fused needs liger-kernel (pip install liger-kernel): {error}; chunked needs nothing more"
        ) from error
    model_type = model.config.model_type
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise UserInputError(f"train.loss: fused: Liger has no kernel for {model_type} models; use chunked")
    # Only the fused head + loss: every other Liger kernel off, so nothing else about the model changes.
    _apply_liger_kernel_to_instance(
        model=model,
        fused_linear_cross_entropy=True,
        cross_entropy=False,
        rope=False,
        rms_norm=False,
        swiglu=False,
        geglu=False,
        layer_norm=False,
    )

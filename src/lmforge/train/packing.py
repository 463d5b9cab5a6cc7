"""Packing in training: several examples share a row of data.max_len tokens, attention kept inside each.

lmforge.data.pack builds the rows (best-fit bins; position_ids restart at 0 per example; no attention mask)
and batches them (PackedCollator). What keeps the examples apart is the model: transformers' masking_utils
(`create_causal_mask` -> `find_packed_sequence_indices`) turns restarting position_ids into a
block-diagonal causal mask when no 2-D attention mask and no KV cache is given, for sdpa and eager attention;
flash-attention reads the same position_ids as varlen boundaries. So:

- `data.packing: auto` (the default) packs pretrain and sft data when the architecture builds its mask
  with create_causal_mask, and pads dynamically otherwise; `on` insists (an error where it cannot work),
  `off` never packs. Pretraining then keeps documents apart too (tokenize_documents), instead of the GPT
  recipe's blocks that attend across document boundaries (tokenize_text, what `off` gives).
- Before the first step, `verify_packing` runs the loaded model on two short examples, alone and packed in
  one row: if the second one's logits move, the packed examples see each other, and the run stops rather
  than train on leaked context (measured on a random tiny Llama: 1.5e-7 packed vs 0.54 with a full mask,
  for logits of magnitude 0.54).
"""

from __future__ import annotations

import importlib
from typing import Any

from lmforge.errors import ConfigError, UserInputError
from lmforge.train.config import TrainConfig

PACKING_STAGES = ("pretrain", "sft")


def supports_packing(model_type: str) -> bool:
    """Whether transformers' implementation of `model_type` builds its attention mask with masking_utils'
    create_causal_mask, which keeps packed examples apart."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    model_class = getattr(transformers, name, None) if isinstance(name, str) else None
    if model_class is None:
        return False
    return hasattr(importlib.import_module(model_class.__module__), "create_causal_mask")


def resolve_packing(config: TrainConfig, model_type: str) -> bool:
    """data.packing for this run's stage and architecture: True when its data is packed."""
    wanted = config.data.packing
    if config.stage not in PACKING_STAGES:
        if wanted == "on":
            raise ConfigError(
                f"data.packing: on applies to stages {', '.join(PACKING_STAGES)}, not {config.stage}; "
                "remove it or set it to auto"
            )
        return False
    if wanted == "off":
        return False
    supported = supports_packing(model_type)
    if wanted == "on" and not supported:
        raise ConfigError(
            f"data.packing: on, but transformers' {model_type} does not keep packed examples apart "
            "(its attention mask ignores position_ids); set data.packing: off"
        )
    return supported


def verify_packing(model: Any) -> float:
    """The largest change of the second example's logits when it shares a row with the first, relative to the
    logits' size; raises when the examples see each other. Returns the measured relative difference."""
    import torch

    parameter = next(model.parameters())
    vocab = int(model.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab, (1, 5), generator=generator).to(parameter.device)
    second = torch.randint(0, vocab, (1, 7), generator=generator).to(parameter.device)
    row = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0).to(parameter.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = model(input_ids=second, use_cache=False).logits.float()
        packed = model(input_ids=row, position_ids=positions, use_cache=False).logits[:, 5:].float()
    model.train(was_training)
    scale = float(alone.abs().max()) or 1.0
    relative = float((packed - alone).abs().max()) / scale
    # Leaked context moves logits by about their own size; kernels for half precision differ by a few percent.
    tolerance = 1e-3 if parameter.dtype == torch.float32 else 5e-2
    if relative > tolerance:
        raise UserInputError(
            f"data.packing: packed examples see each other in this model ({relative:.1%} change in an example's "
            f"logits next to another, tolerance {tolerance:.1%}); set data.packing: off"
        )
    return relative

"""`lmforge compress prune`: zero or remove the weights that matter least, judged on calibration data.

Scores (per weight W[i, j] of a linear layer inside the decoder blocks; embeddings and the LM head stay):
- magnitude: |W[i, j]|;
- wanda: |W[i, j]| · ‖X_j‖₂, the weight times the norm of its input feature over the calibration tokens
  (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"), compared within each output row.
Patterns:
- unstructured: the lowest-scoring fraction `sparsity` of each output row is set to zero;
- 2:4: in every group of 4 consecutive inputs the 2 lowest are zeroed (NVIDIA's semi-structured
  sparsity; sparsity is 50% by definition).
Zeros keep the tensor shapes: the file is as large and a CPU as fast (dense kernels) — the report
says so. `structure="mlp"` instead removes whole MLP channels (rows of gate/up, columns of down,
scored by magnitude ‖up_j‖·‖down_j‖ or wanda ‖down_j‖·‖a_j‖ with a_j the channel's activation) and
rewrites intermediate_size: a smaller file and faster decoding that transformers reloads as is.
An encoder (compress.encoder) is pruned the same way inside its blocks; its MLP channels are BERT's
intermediate/output dense layers.
`structure="heads"` removes whole attention heads the same way (compress/heads.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import UserInputError
from lmforge.fileio import atomic_directory

METHODS = ("magnitude", "wanda")
PATTERNS = ("unstructured", "2:4")
STRUCTURES = ("none", "mlp", "heads")
DEFAULT_CALIBRATION = "builtin:corpus"


@dataclass
class PruneResult:
    source: str
    output: str
    method: str
    pattern: str
    structure: str
    sparsity: float  # share of the pruned layers' weights now zero, or of the MLP channels / query heads removed
    params_before: int
    params_after: int
    seconds: float
    layers: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_texts(data: str, samples: int, tokenizer: Any) -> list[str]:
    """Texts from any lmforge data source (train split of a built-in set): chats rendered by the model's
    own template (an encoder has none: their contents joined), plain text as is."""
    from lmforge.compress.encoder import record_text
    from lmforge.evaluate.run import load_records

    records, _, _ = load_records(data, "train" if data.startswith("builtin:") else None, samples)
    texts = []
    for record in records[:samples]:
        if "messages" in record and getattr(tokenizer, "chat_template", None) is None:
            texts.append(record_text(record) or "")
        elif "messages" in record:
            texts.append(tokenizer.apply_chat_template(record["messages"], tokenize=False))
        elif "text" in record:
            texts.append(record["text"])
    if not texts:
        raise UserInputError(f"{data} holds no text or chat examples to calibrate on")
    return texts


def _decoder_linears(model: Any) -> dict[str, Any]:
    """Every nn.Linear inside the decoder (or encoder) blocks (not the embeddings, the LM head or a pooler)."""
    import torch

    from lmforge.compress.encoder import in_blocks

    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and in_blocks(name)
    }


def _input_norms(model: Any, tokenizer: Any, texts: list[str], modules: dict[str, Any]) -> dict[str, Any]:
    """‖X_j‖₂ over all calibration tokens for every input feature j of every module (Wanda's statistic)."""
    import torch

    squares: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def record(_module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
            flat = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            squares[name] = squares.get(name, 0) + (flat * flat).sum(dim=0)

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        with torch.inference_mode():
            for text in texts:
                ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=512).input_ids
                model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return {name: value.sqrt() for name, value in squares.items()}


def _mask(scores: Any, pattern: str, sparsity: float) -> Any:
    """True where a weight is kept: per output row (unstructured) or per group of 4 inputs (2:4)."""
    import torch

    if pattern == "2:4":
        rows, columns = scores.shape
        if columns % 4:
            raise UserInputError(f"2:4 needs input sizes divisible by 4, this layer has {columns}")
        groups = scores.reshape(rows, columns // 4, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(2, groups.topk(2, dim=2).indices, True)
        return keep.reshape(rows, columns)
    pruned = int(scores.shape[1] * sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if pruned:
        keep.scatter_(1, scores.topk(pruned, dim=1, largest=False).indices, False)
    return keep


def kept_channels(width: int, sparsity: float) -> int:
    """MLP channels left after removing the share `sparsity` of `width`: a multiple of 8, as kernels like."""
    kept = max(8, -(-int(width * (1 - sparsity)) // 8) * 8)
    if kept >= width:
        raise UserInputError(f"--sparsity {sparsity} keeps all {width} MLP channels; use a larger value")
    return kept


def _prune_mlp_channels(model: Any, method: str, sparsity: float, tokenizer: Any, texts: list[str]) -> int:
    """Remove the lowest-scoring share of every MLP's intermediate channels; returns the channels kept per layer."""
    import torch

    layers = model.model.layers
    mlps = {f"model.layers.{i}.mlp.down_proj": layer.mlp for i, layer in enumerate(layers)}
    if not all(hasattr(mlp, "gate_proj") and hasattr(mlp, "up_proj") for mlp in mlps.values()):
        raise UserInputError("--structure mlp needs gated MLPs (gate_proj/up_proj/down_proj: Llama, Mistral, Qwen)")
    kept = kept_channels(model.config.intermediate_size, sparsity)
    norms = (
        _input_norms(model, tokenizer, texts, {name: mlp.down_proj for name, mlp in mlps.items()})
        if method == "wanda"
        else {}
    )
    with torch.no_grad():
        for name, mlp in mlps.items():
            down = mlp.down_proj.weight  # (hidden, intermediate)
            if method == "wanda":
                scores = down.norm(dim=0) * norms[name]
            else:
                scores = mlp.up_proj.weight.norm(dim=1) * down.norm(dim=0)
            index = scores.topk(kept).indices.sort().values
            for attribute, axis in (("gate_proj", 0), ("up_proj", 0), ("down_proj", 1)):
                old = getattr(mlp, attribute)
                new = torch.nn.Linear(
                    old.in_features if axis == 0 else kept,
                    kept if axis == 0 else old.out_features,
                    bias=old.bias is not None,
                    dtype=old.weight.dtype,
                )
                new.weight.copy_(old.weight.index_select(axis, index))
                if old.bias is not None:
                    new.bias.copy_(old.bias if axis == 1 else old.bias[index])
                setattr(mlp, attribute, new)
    model.config.intermediate_size = kept
    return kept


def prune(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    sparsity: float = 0.5,
    method: str = "wanda",
    pattern: str = "unstructured",
    structure: str = "none",
    calibration: str = DEFAULT_CALIBRATION,
    samples: int = 32,
) -> PruneResult:
    """Prune the causal LM or encoder `model` and save the result (safetensors) with its tokenizer (and an
    encoder's sentence-transformers files) into `out`."""
    import torch
    from transformers import AutoTokenizer

    from lmforge.compress import encoder
    from lmforge.hub.reference import locate_model
    from lmforge.runtime import no_hub_kernels

    if method not in METHODS:
        raise UserInputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if pattern not in PATTERNS:
        raise UserInputError(f"unknown --pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    if structure not in STRUCTURES:
        raise UserInputError(f"unknown --structure {structure!r}; choose one of {', '.join(STRUCTURES)}")
    if not 0 < sparsity < 1:
        raise UserInputError(f"--sparsity must be between 0 and 1 (exclusive), got {sparsity}")
    if pattern == "2:4" and structure != "none":
        raise UserInputError("--pattern 2:4 zeroes weights inside layers; it does not combine with --structure")
    started = time.perf_counter()
    source = locate_model(str(model)).path
    no_hub_kernels()
    is_encoder = encoder.is_encoder(source)
    model_class = encoder.auto_class(is_encoder)
    network = model_class.from_pretrained(source, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    texts = calibration_texts(calibration, samples, tokenizer) if method == "wanda" else []
    params_before = network.num_parameters()
    notes = []
    if structure == "mlp":
        width = network.config.intermediate_size
        if is_encoder:
            kept = encoder.prune_mlp_channels(
                network, method, sparsity, lambda modules: _input_norms(network, tokenizer, texts, modules)
            )
            layers = network.config.num_hidden_layers
        else:
            kept = _prune_mlp_channels(network, method, sparsity, tokenizer, texts)
            layers = len(network.model.layers)
        achieved = 1 - kept / width
        notes.append(f"MLP channels kept per layer: {kept}; intermediate_size rewritten, the file and the model shrink")
    elif structure == "heads":
        from lmforge.compress.heads import attention_outputs, prune_heads

        outputs = attention_outputs(network)
        plan = prune_heads(
            network, sparsity, _input_norms(network, tokenizer, texts, outputs) if method == "wanda" else None
        )
        layers, achieved = len(outputs), plan.removed / plan.heads
        notes.append(plan.note())
    else:
        modules = _decoder_linears(network)
        norms = _input_norms(network, tokenizer, texts, modules) if method == "wanda" else {}
        zeroed = total = 0
        with torch.no_grad():
            for name, module in modules.items():
                scores = module.weight.abs() * (norms[name][None, :] if method == "wanda" else 1)
                keep = _mask(scores, pattern, sparsity)
                module.weight.mul_(keep)
                zeroed += int((~keep).sum())
                total += keep.numel()
        layers, achieved = len(modules), zeroed / total
        notes.append("zeros are stored densely: the file size and CPU speed do not change (dense kernels)")
    with atomic_directory(out) as folder:
        network.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if is_encoder:
            encoder.copy_sentence_transformers_files(source, folder)
        reloaded = model_class.from_pretrained(folder, dtype=torch.float32)
        if reloaded.num_parameters() != network.num_parameters():
            raise UserInputError(
                f"the pruned model reloads with {reloaded.num_parameters()} parameters, "
                f"expected {network.num_parameters()}"
            )
    return PruneResult(
        str(source),
        str(Path(out)),
        method,
        pattern,
        structure,
        achieved,
        params_before,
        network.num_parameters(),
        time.perf_counter() - started,
        layers,
        notes,
    )

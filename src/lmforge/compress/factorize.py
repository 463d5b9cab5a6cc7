"""`lmforge compress factorize`: replace linear layers by two thin ones from a truncated SVD.

W (out × in) ≈ B·A with B = U_r·diag(σ_r) (out × r) and A = V_rᵀ (r × in) — the best rank-r
approximation in Frobenius norm (Eckart–Young). With `energy` E the rank of each layer is the smallest
r whose singular values keep a share E of Σσ² (the squared Frobenius norm); with `rank` R every chosen
layer gets R. A layer is only replaced when r·(in + out) < in·out, i.e. when it really shrinks.

The folder it writes (the original config, the factorized weights, lmforge_lowrank.json) is the low-rank
format of lmforge.files.lowrank, whose `load_factorized` rebuilds the model for every lmforge command
(through lmforge.generate.load_model) and for the reload check here.

An encoder (MiniLM, a BERT: lmforge.compress.encoder) gets its query/key/value/dense block layers factorized,
keeps its sentence-transformers files, and is rebuilt as an AutoModel (the folder says so) by lmforge serve's
/v1/embeddings and the report; transformers and sentence-transformers alone cannot load the pairs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError, UserInputError
from lmforge.fileio import atomic_directory
from lmforge.files.lowrank import LOWRANK_FILE, load_factorized, swap_module

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class FactorizeResult:
    source: str
    output: str
    energy: float | None
    rank: int | None
    ranks: dict[str, int]  # layer → rank, for the layers that were replaced
    kept_dense: list[str]  # chosen layers where the rank needed would not have saved anything
    params_before: int
    params_after: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_for_energy(singular_values: Any, energy: float) -> int:
    """The smallest r with Σ_{i<r} σ_i² ≥ energy · Σ σ_i²."""
    import torch

    squares = singular_values.double() ** 2
    cumulative = torch.cumsum(squares, 0) / squares.sum()
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype)).item()) + 1


def _low_rank_pair(linear: Any, rank: int) -> Any:
    import torch

    weight = linear.weight.detach().float()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    first = torch.nn.Linear(linear.in_features, rank, bias=False)
    second = torch.nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        first.weight.copy_(vh[:rank])
        second.weight.copy_(u[:, :rank] * s[:rank])
        if linear.bias is not None:
            second.bias.copy_(linear.bias)
    return torch.nn.Sequential(first, second).to(linear.weight.dtype)


def factorize(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    energy: float | None = None,
    rank: int | None = None,
    targets: tuple[str, ...] | None = None,
) -> FactorizeResult:
    """Factorize the chosen linear layers (default DEFAULT_TARGETS, an encoder's ENCODER_TARGETS) of the causal
    LM or encoder `model` and save it (with its tokenizer) to `out`."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from lmforge.compress import encoder
    from lmforge.hub.reference import locate_model
    from lmforge.runtime import no_hub_kernels

    if (energy is None) == (rank is None):
        raise UserInputError("give exactly one of --energy (share of Σσ² kept, e.g. 0.9) or --rank")
    if energy is not None and not 0 < energy <= 1:
        raise UserInputError(f"--energy must be in (0, 1], got {energy}")
    if rank is not None and rank < 1:
        raise UserInputError(f"--rank must be at least 1, got {rank}")
    started = time.perf_counter()
    source = locate_model(str(model)).path
    no_hub_kernels()
    is_encoder = encoder.is_encoder(source)
    targets = targets or (encoder.ENCODER_TARGETS if is_encoder else DEFAULT_TARGETS)
    network = encoder.auto_class(is_encoder).from_pretrained(source, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    params_before = network.num_parameters()
    chosen = {
        name: module
        for name, module in network.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets and encoder.in_blocks(name)
    }
    if not chosen:
        raise UserInputError(f"no linear layer named {', '.join(targets)} inside the model's blocks")
    ranks, dense = {}, []
    for name, linear in chosen.items():
        if energy is not None:
            r = rank_for_energy(torch.linalg.svdvals(linear.weight.detach().float()), energy)
        else:
            r = min(rank, *linear.weight.shape)
        if r * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
            dense.append(name)
            continue
        swap_module(network, name, _low_rank_pair(linear, r))
        ranks[name] = r
    with atomic_directory(out) as folder:
        network.config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if getattr(network, "generation_config", None) is not None and not is_encoder:
            network.generation_config.save_pretrained(folder)
        if is_encoder:
            encoder.copy_sentence_transformers_files(source, folder)
        state = {key: value.contiguous() for key, value in network.state_dict().items()}
        if network.config.tie_word_embeddings and "lm_head.weight" in state:
            del state["lm_head.weight"]  # re-tied on load, as transformers does
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        layout = {"ranks": ranks, **({"auto_class": "AutoModel"} if is_encoder else {})}
        (folder / LOWRANK_FILE).write_text(json.dumps(layout, indent=2) + "\n")
        reloaded = load_factorized(folder, torch.float32)
        probe = torch.arange(min(16, network.config.vocab_size))[None]
        with torch.inference_mode():  # [0]: the logits, or an encoder's last hidden state
            difference = float((reloaded(probe)[0] - network(probe)[0]).abs().max())
        if difference > 1e-4:
            raise FormatError(f"the factorized model reloads differently (max logit difference {difference:.2e})")
    return FactorizeResult(
        str(source),
        str(Path(out)),
        energy,
        rank,
        ranks,
        dense,
        params_before,
        network.num_parameters(),
        time.perf_counter() - started,
    )

"""The low-rank folder `lmforge compress factorize` writes, and how it is read back.

transformers has no class for a model whose linear layers are pairs of thin ones, so the folder holds the
original config.json, the factorized weights (model.safetensors: `<layer>.0.weight` = A (rank × in),
`<layer>.1.weight` = B (out × rank), the bias on the second) and lmforge_lowrank.json {"ranks": {layer: rank}}, plus
"auto_class": "AutoModel" for an encoder (a causal LM, AutoModelForCausalLM, is the default).
The format is declared here, below everything that reads it: compress writes it, inspect describes it,
and lmforge.generate.load_model (so every command) loads it through `load_factorized`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError

LOWRANK_FILE = "lmforge_lowrank.json"


def is_factorized(folder: Path) -> bool:
    """Whether `folder` is a low-rank folder (it holds LOWRANK_FILE)."""
    return folder.is_dir() and (folder / LOWRANK_FILE).is_file()


_AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModel")


def _layout(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / LOWRANK_FILE
    try:
        layout: dict[str, Any] = json.loads(path.read_text())
        layout["ranks"] = dict(layout["ranks"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FormatError(f"{path} is unreadable: {error}") from None
    if layout.setdefault("auto_class", _AUTO_CLASSES[0]) not in _AUTO_CLASSES:
        raise FormatError(f"{path}: auto_class {layout['auto_class']!r} is not one of {', '.join(_AUTO_CLASSES)}")
    return layout


def read_ranks(folder: str | os.PathLike[str]) -> dict[str, int]:
    """{layer name: rank} of a low-rank folder; FormatError naming the file when it cannot be read."""
    ranks: dict[str, int] = _layout(folder)["ranks"]
    return ranks


def swap_module(model: Any, name: str, module: Any) -> None:
    """Put `module` where the submodule called `name` (dotted, as named_modules gives it) is."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def load_factorized(folder: str | os.PathLike[str], dtype: Any) -> Any:
    """The model a low-rank folder holds: built from its config, low-rank pairs swapped in, weights loaded."""
    import torch
    import transformers
    from safetensors.torch import load_file

    path = Path(folder)
    layout = _layout(path)
    ranks = layout["ranks"]
    config = transformers.AutoConfig.from_pretrained(path)
    network = getattr(transformers, layout["auto_class"]).from_config(config, dtype=torch.float32)
    for name, rank in ranks.items():
        linear = network.get_submodule(name)
        swap_module(
            network,
            name,
            torch.nn.Sequential(
                torch.nn.Linear(linear.in_features, rank, bias=False),
                torch.nn.Linear(rank, linear.out_features, bias=linear.bias is not None),
            ),
        )
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [key for key in missing if not (key == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise FormatError(
            f"{path}: weights do not fit the factorized model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if config.tie_word_embeddings:
        network.tie_weights()
    return network.to(dtype).eval()

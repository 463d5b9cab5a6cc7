"""Encoders (sentence embedders such as MiniLM, a BERT) in `lmforge compress`.

What applies to an encoder: bitsandbytes int8/nf4 (quantize), magnitude/Wanda pruning (unstructured, 2:4,
or whole MLP channels) and SVD factorization of the linear layers inside its blocks. GGUF does not:
lmforge's GGUF writer and llama.cpp runs are for decoders, so quantize refuses an encoder.

An encoder is what `lmforge serve` embeds with (lmforge.serve.embed.is_embedding_model: a sentence-transformers
folder, or a bare `XModel`). It is loaded with AutoModel (no LM head), and every compressed folder keeps the
sentence-transformers module files (modules.json, the Pooling and Normalize folders, sentence_bert_config.json),
so SentenceTransformer(OUT), transformers' AutoModel (bitsandbytes, pruned) and lmforge serve's /v1/embeddings
read it with the original's pooling.

Its quality is not perplexity or generation: the report embeds held-out sentences with each model through
serve's Embedder (the /v1/embeddings code path) and compares them with the original's vectors: the mean
cosine similarity of each sentence's two embeddings, and top-1 retrieval agreement (each sentence's nearest
neighbour among the others is the one the original finds). Speed is encoding throughput (sentences/s).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError, UserInputError

# sentence-transformers' own files beside the weights (the module folders listed in modules.json are added)
_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
# `model.layers.3.mlp.up_proj` (decoders), `encoder.layer.3.intermediate.dense` (BERT)
_IN_BLOCKS = re.compile(r"(^|\.)layers?\.\d+\.")
ENCODER_TARGETS = ("query", "key", "value", "dense")  # BERT's attention and MLP linears


def is_encoder(path: Path) -> bool:
    """Whether the model folder `path` is an encoder to embed with (serve's rule), not a causal LM."""
    from lmforge.serve.embed import is_embedding_model

    return is_embedding_model(path)


def auto_class(encoder: bool) -> Any:
    """transformers' class the folder loads with: AutoModel for an encoder, AutoModelForCausalLM otherwise."""
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModel if encoder else AutoModelForCausalLM


def in_blocks(name: str) -> bool:
    """Whether the module `name` lies inside the transformer blocks (not embeddings, LM head or pooler)."""
    return bool(_IN_BLOCKS.search(name))


def copy_sentence_transformers_files(source: Path, folder: Path) -> None:
    """The sentence-transformers module files and folders (pooling, normalisation) of `source` into `folder`, so
    the compressed encoder pools as the original does everywhere it is loaded."""
    import json

    for name in _ST_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    if (source / "modules.json").is_file():
        modules = json.loads((source / "modules.json").read_text())
        for module in modules if isinstance(modules, list) else []:
            sub = module.get("path") if isinstance(module, dict) else None
            if not isinstance(sub, str) or not sub:
                continue
            inside = (source / sub).resolve()
            if not inside.is_relative_to(source.resolve()) or inside == source.resolve():
                raise FormatError(f"{source / 'modules.json'}: module path {sub!r} leaves the model folder")
            if inside.is_dir():
                shutil.copytree(inside, folder / sub, dirs_exist_ok=True)


def record_text(record: dict[str, Any]) -> str | None:
    """A record as one plain text for an encoder (no chat template): its text, or a chat's contents joined."""
    if "text" in record:
        return str(record["text"])
    if "messages" in record:
        return "\n".join(str(message.get("content") or "") for message in record["messages"])
    return None


def prune_mlp_channels(
    model: Any, method: str, sparsity: float, input_norms: Callable[[dict[str, Any]], dict[str, Any]]
) -> int:
    """Remove the lowest-scoring share of every BERT block's intermediate channels (rows of intermediate.dense,
    columns of output.dense), scored like the decoders' (magnitude ‖in_j‖·‖out_j‖, Wanda ‖out_j‖·‖a_j‖ with
    a_j the channel's activation from `input_norms`); rewrites intermediate_size. Returns the channels kept."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    from lmforge.compress.prune import kept_channels

    encoder = getattr(model, "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if blocks is None or not all(hasattr(b, "intermediate") and hasattr(b, "output") for b in blocks):
        raise UserInputError("--structure mlp on an encoder needs BERT-style blocks (intermediate/output dense)")
    width = model.config.intermediate_size
    kept = kept_channels(width, sparsity)
    outputs = {f"encoder.layer.{i}.output.dense": block.output.dense for i, block in enumerate(blocks)}
    norms = input_norms(outputs) if method == "wanda" else {}
    with torch.no_grad():
        for (name, down), block in zip(outputs.items(), blocks):
            if method == "wanda":
                scores = down.weight.norm(dim=0) * norms[name]
            else:
                scores = block.intermediate.dense.weight.norm(dim=1) * down.weight.norm(dim=0)
            index = scores.topk(kept).indices.sort().values
            block.intermediate.dense = prune_linear_layer(block.intermediate.dense, index, dim=0)
            block.output.dense = prune_linear_layer(down, index, dim=1)
    model.config.intermediate_size = kept
    return kept


def held_out_sentences(data: str, limit: int) -> list[str]:
    """The held-out sentences the report embeds: the test split of a built-in set (or your file), as plain text."""
    from lmforge.evaluate.run import load_records

    records, _, _ = load_records(data, None, limit)
    sentences = [text for text in map(record_text, records[:limit]) if text]
    if len(sentences) < 2:
        raise UserInputError(f"{data} gives {len(sentences)} texts; the encoder report needs at least 2")
    return sentences


class TimedEncoder:
    """One encoder kept loaded through serve's Embedder; `once()` embeds every sentence (sentences/s)."""

    def __init__(self, path: str, sentences: list[str]):
        from lmforge.serve.embed import Embedder

        self.embedder = Embedder(path, device="cpu")
        ids = self.embedder.token_ids(sentences)
        limit = self.embedder.max_tokens
        self.truncated = sum(len(tokens) > limit for tokens in ids)
        # longer inputs are cut to the model's window, as SentenceTransformer.encode does (counted in the notes)
        self.ids = [tokens[:limit] for tokens in ids]
        model = self.embedder.model
        self.params, self.load_bytes = int(model.num_parameters()), int(model.get_memory_footprint())
        self.vectors = self.embed()

    def embed(self) -> Any:
        import torch

        return torch.tensor(self.embedder.embed(self.ids))

    def once(self) -> float:
        started = time.perf_counter()
        self.embed()
        return len(self.ids) / (time.perf_counter() - started)


def agreement(reference: Any, vectors: Any) -> tuple[float, float]:
    """(mean cosine similarity of each sentence's vector to the reference's, share of sentences whose nearest
    neighbour among the others, by cosine, is the reference's nearest neighbour)."""
    import torch

    def unit(matrix: Any) -> Any:
        return torch.nn.functional.normalize(matrix.double(), dim=1)

    a, b = unit(reference), unit(vectors)
    cosine = float((a * b).sum(1).mean())

    def neighbours(matrix: Any) -> Any:
        similarity = matrix @ matrix.T
        similarity.fill_diagonal_(float("-inf"))
        return similarity.argmax(1)

    return cosine, float((neighbours(a) == neighbours(b)).double().mean())

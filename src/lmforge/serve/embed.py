"""Sentence embeddings for `/v1/embeddings`: an encoder model pooled the way its sentence-transformers config says.

A sentence-transformers folder (MiniLM, BGE, E5 ...) lists its modules in modules.json: the transformer, a Pooling
module whose 1_Pooling/config.json names the pooling mode, and optionally Normalize (unit length). Reading those
files gives exactly the vectors `SentenceTransformer(folder).encode(texts)` gives, without depending on the
sentence-transformers package: mean pooling is the sum of the token vectors where the attention mask is 1 divided by
the mask's sum (clamped at 1e-9), CLS pooling the first token, last-token pooling the last real token, and
Normalize divides by the L2 norm (sentence_transformers.models.Pooling / Normalize). Inputs longer than the
model's max_seq_length are refused (OpenAI and vLLM answer 400), not silently truncated as sentence-transformers
does.

A plain encoder folder without modules.json is mean-pooled and not normalised, as sentence-transformers does when
it loads one.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, NotFoundError, UserInputError
from lmforge.files.lowrank import is_factorized, load_factorized

POOLING_MODES = ("mean", "cls", "max", "lasttoken")
_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}
_BATCH = 64  # inputs per forward pass; a request with more runs in several


def is_embedding_model(folder: str | Path) -> bool:
    """Whether `folder` holds an encoder to embed with rather than a causal LM to generate with: a
    sentence-transformers folder (modules.json), or a bare base model (architecture `XModel`, such as BertModel,
    with no language-model head)."""
    path = Path(folder)
    if (path / "modules.json").is_file():
        return True
    try:
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        return False
    # "Model" alone: GPT-2's GPT2LMHeadModel (and *WithLMHeadModel) end in it too, and generate.
    name = architectures[0] if len(architectures) == 1 else ""
    return name.endswith("Model") and not name.endswith("LMHeadModel")


@dataclass
class Pooling:
    mode: str  # one of POOLING_MODES
    normalize: bool
    max_tokens: int  # the longest input, in tokens (sentence-transformers' max_seq_length)


def read_pooling(folder: Path, model_max_tokens: int) -> Pooling:
    """The pooling a sentence-transformers folder declares (modules.json, its Pooling module's config.json,
    sentence_bert_config.json's max_seq_length); mean pooling without normalisation for a plain encoder."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return Pooling("mean", False, model_max_tokens)
    try:
        modules = json.loads(modules_file.read_text())
        types = {module["type"].rsplit(".", 1)[-1]: module for module in modules}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"{modules_file} is unreadable: {error}") from None
    unknown = set(types) - {"Transformer", "Pooling", "Normalize"}
    if unknown:
        raise UserInputError(
            f"{folder}: sentence-transformers modules {', '.join(sorted(unknown))} are not supported "
            "(only Transformer, Pooling, Normalize)"
        )
    mode = "mean"
    if "Pooling" in types:
        pooling_file = folder / types["Pooling"].get("path", "") / "config.json"
        try:
            config = json.loads(pooling_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(
                f"{pooling_file} (the Pooling module modules.json names) is unreadable: {error}"
            ) from None
        chosen = [name for key, name in _POOLING_KEYS.items() if config.get(key)]
        others = [
            key
            for key, value in config.items()
            if key.startswith("pooling_mode") and value and key not in _POOLING_KEYS
        ]
        if len(chosen) != 1 or others:
            raise UserInputError(
                f"{folder}: pooling {', '.join(chosen + others) or 'none'} is not supported "
                f"(one of {', '.join(POOLING_MODES)})"
            )
        mode = chosen[0]
    max_tokens = model_max_tokens
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        max_tokens = int(json.loads(bert_config.read_text()).get("max_seq_length") or model_max_tokens)
    return Pooling(mode, "Normalize" in types, min(max_tokens, model_max_tokens))


class Embedder:
    """An encoder and its tokenizer and pooling, embedding batches of texts or token ids. Thread-safe: one forward
    pass at a time (callers run it in worker threads, off the event loop)."""

    def __init__(
        self,
        folder: str,
        *,
        name: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        device_map: str | None = None,
        trust_pickle: bool = False,
        trust_remote_code: bool = False,
    ):
        from transformers import AutoModel, AutoTokenizer

        from lmforge.files.safe_load import check_model_folder
        from lmforge.generate.load import context_length_of, device_and_dtype
        from lmforge.hub.reference import locate_model
        from lmforge.runtime import no_hub_kernels

        no_hub_kernels()
        path = locate_model(folder, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code).path
        target, torch_dtype = device_and_dtype(device, dtype)
        kwargs: dict[str, Any] = {
            "dtype": torch_dtype,
            "trust_remote_code": trust_remote_code,
            "use_safetensors": check_model_folder(path, trust_pickle=trust_pickle),
        }
        if device_map is not None:
            kwargs["device_map"] = device_map
        try:
            if is_factorized(path):  # `lmforge compress factorize` of an encoder: low-rank pairs, lmforge's format
                self.model = load_factorized(path, torch_dtype)
            else:
                self.model = AutoModel.from_pretrained(path, **kwargs).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise NotFoundError(f"cannot load the encoder {folder}: {str(error).splitlines()[0]}") from None
        if device_map is None:
            self.model.to(target)
        self.device = self.model.get_input_embeddings().weight.device
        self.name = name or path.name
        self.pooling = read_pooling(path, context_length_of(self.model.config, self.tokenizer))
        self.dimensions = int(self.model.config.hidden_size)
        self._lock = threading.Lock()

    @property
    def max_tokens(self) -> int:
        return self.pooling.max_tokens

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text as the model reads it, special tokens ([CLS] ... [SEP]) included."""
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One vector per input (token ids, special tokens included), pooled and normalised as configured."""
        import torch

        vectors: list[list[float]] = []
        pad = self.tokenizer.pad_token_id or 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(inputs), _BATCH):
                batch = inputs[start : start + _BATCH]
                width = max(len(ids) for ids in batch)
                # right-padded, as sentence-transformers pads: an encoder sees every position at once
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, tokens in enumerate(batch):
                    ids[row, : len(tokens)] = torch.tensor(tokens)
                    mask[row, : len(tokens)] = 1
                hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))[0].float()
                vectors += pool(hidden, mask.to(hidden.device), self.pooling).cpu().tolist()
        return vectors


def pool(hidden: Any, mask: Any, pooling: Pooling) -> Any:
    """[batch, tokens, dim] token vectors -> [batch, dim] sentence vectors (sentence_transformers.models.Pooling)."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling.mode == "mean":
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    elif pooling.mode == "max":
        pooled = hidden.masked_fill(weights == 0, -1e9).max(1).values
    elif pooling.mode == "cls":
        pooled = hidden[:, 0]
    else:  # lasttoken: right padding, so the last real token sits at mask.sum() - 1
        pooled = hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]
    return torch.nn.functional.normalize(pooled, p=2, dim=1) if pooling.normalize else pooled

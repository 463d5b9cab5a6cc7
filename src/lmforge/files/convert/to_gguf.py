"""HF Llama-family model folder → GGUF (f32, f16, bf16, q8_0, q4_0, Q4_K_M, Q5_K_M, Q6_K), in pure Python.

Mirrors llama.cpp's convert_hf_to_gguf.py for llama/mistral (LlamaModel: Q/K rows permuted for
ggml's rotary layout), qwen2 and qwen3: the same hyperparameter keys, tensor names from
gguf.TensorNameMap, vocabulary (tokenizer.ggml.* as get_vocab_base / LlamaHfVocab build it), the
same type rules (1-D tensors and norms stay f32; a row not divisible by the quant block falls
back to f16; K-quant mixes as llama-quant.cpp picks them, written by lmforge.files.convert.kquants),
the llama.cpp pre-tokenizer whose split equals the tokenizer's (refused when none does), then reads the file back with gguf.GGUFReader and checks every tensor's shape and
dequantized values against the source within the quant's error bound. Tensors are read, converted
and spooled to disk one at a time (GGUFWriter's temp file), so memory stays near the largest tensor.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lmforge.errors import DependencyError, FormatError, UserInputError
from lmforge.fileio import atomic_path
from lmforge.files.convert.common import (
    ConvertReport,
    progress_bar,
    read_json,
    weight_files,
)
from lmforge.files.detect import detect_format
from lmforge.files.safe_load import safe_torch_load

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")


@dataclass(frozen=True)
class _Arch:
    gguf_arch: str  # gguf.MODEL_ARCH member name
    permute_qk: bool  # llama.cpp's LlamaModel.permute for HF's rotate_half layout


# model_type → how llama.cpp converts it (convert_hf_to_gguf.py: LlamaModel, Qwen2Model, Qwen3Model).
ARCHITECTURES = {
    "llama": _Arch("LLAMA", True),
    "mistral": _Arch("LLAMA", True),
    "qwen2": _Arch("QWEN2", False),
    "qwen3": _Arch("QWEN3", False),
}
_SKIP_TENSORS = re.compile(r"rotary_emb\.inv_freq$")


def _gguf_types() -> dict[str, tuple[Any, Any]]:
    """quant name → (GGMLQuantizationType of most matrices, LlamaFileType)."""
    import gguf

    q, f = gguf.GGMLQuantizationType, gguf.LlamaFileType
    return {
        "f32": (q.F32, f.ALL_F32),
        "f16": (q.F16, f.MOSTLY_F16),
        "bf16": (q.BF16, f.MOSTLY_BF16),
        "q8_0": (q.Q8_0, f.MOSTLY_Q8_0),
        "q4_0": (q.Q4_0, f.MOSTLY_Q4_0),
        "q4_k_m": (q.Q4_K, f.MOSTLY_Q4_K_M),
        "q5_k_m": (q.Q5_K, f.MOSTLY_Q5_K_M),
        "q6_k": (q.Q6_K, f.MOSTLY_Q6_K),
    }


def permute_qk(weights: Any, n_head: int, n_head_kv: int | None) -> Any:
    """llama.cpp LlamaModel.permute: HF's rotate_half halves → ggml's interleaved rotary pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 writes rope_parameters; older configs write rope_theta and rope_scaling."""
    params = dict(config.get("rope_scaling") or {})
    params.update(config.get("rope_parameters") or {})
    if "rope_theta" not in params and "rope_theta" in config:
        params["rope_theta"] = config["rope_theta"]
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def llama3_rope_factors(params: dict[str, Any], head_dim: int) -> Any:
    """The rope_freqs tensor convert_hf_to_gguf.py's LlamaModel writes for rope_type 'llama3' (Llama 3.1+)."""
    import numpy as np

    base = params.get("rope_theta", 10000.0)
    factor, low, high = (
        params.get("factor", 8.0),
        params.get("low_freq_factor", 1.0),
        params.get("high_freq_factor", 4.0),
    )
    old_context = params.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _write_hparams(writer: Any, config: dict[str, Any], model_type: str, name: str, file_type: Any) -> dict[str, Any]:
    import gguf

    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // n_head
    writer.add_type("model")
    writer.add_name(name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if ARCHITECTURES[model_type].permute_qk:
        writer.add_rope_dimension_count(head_dim)
    rope = _rope_parameters(config)
    if "rope_theta" in rope:
        writer.add_rope_freq_base(float(rope["rope_theta"]))
    rope_type = rope["rope_type"]
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif rope_type not in ("default", "llama3"):
        raise UserInputError(
            f"rope scaling {rope_type!r} is not supported for GGUF export (default, linear, yarn, llama3 are)"
        )
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    return {"n_head": n_head, "n_head_kv": n_head_kv, "head_dim": head_dim, "rope": rope}


def _pre_tokenizer(folder: Path, forced: str | None) -> tuple[str, str]:
    """tokenizer.ggml.pre for a byte-level BPE tokenizer and how it was chosen: `forced` when given, else
    the llama.cpp name whose split equals the tokenizer's (lmforge.files.convert.pretokenizer); refused
    when none does, since llama.cpp would then feed the model different token ids than transformers."""
    from transformers import AutoTokenizer

    from lmforge.files.convert.pretokenizer import known_names, match_pre_tokenizer

    if forced is not None:
        if forced not in known_names():
            raise UserInputError(
                f"unknown --pre-tokenizer {forced!r}; llama.cpp names lmforge knows: {', '.join(known_names())}"
            )
        return forced, "given"
    match = match_pre_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
    if match.name is None:
        raise UserInputError(
            f"no llama.cpp pre-tokenizer splits text as {folder.name}'s tokenizer does ({match.detail}); llama.cpp "
            "would tokenize prompts into other ids than transformers and the model would answer differently. "
            "Use a tokenizer whose split llama.cpp knows, or force one with --pre-tokenizer NAME"
        )
    return match.name, match.how


def _bpe_vocab(folder: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and types as convert_hf_to_gguf.py's get_vocab_base builds them for a GPT-2 style BPE."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    reverse = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []  # gguf.TokenType members (an IntEnum)
    for token_id in range(vocab_size):
        if token_id not in reverse:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[token_id]
        if token in added:
            if token_id in decoder and not decoder[token_id].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = token_id in decoder and decoder[token_id].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _write_vocab(writer: Any, folder: Path, vocab_size: int, pre_tokenizer: str | None) -> tuple[str, str, str]:
    """tokenizer.ggml.*: 'gpt2' for byte-level BPE, 'llama' for SentencePiece (tokenizer.json with
    byte fallback, or tokenizer.model), plus merges, special ids, add_bos/eos and the chat template.
    Returns the tokenizer model, the pre-tokenizer name and how it was chosen."""
    import gguf
    from gguf.vocab import BpeVocab, LlamaHfVocab, SentencePieceVocab, SpecialVocab

    try:
        BpeVocab(folder)
        model = "gpt2"
    except (FileNotFoundError, ValueError, KeyError):
        model = "llama"
    if model == "gpt2":
        tokens, types = _bpe_vocab(folder, vocab_size)
        scores = None
    else:
        try:
            vocab: Any = LlamaHfVocab(folder)
        except (FileNotFoundError, KeyError, TypeError):
            if not (folder / "tokenizer.model").is_file():
                raise FormatError(
                    f"{folder} has no tokenizer GGUF can carry (tokenizer.json BPE or tokenizer.model)"
                ) from None
            try:
                vocab = SentencePieceVocab(folder)
            except ImportError:
                raise DependencyError(
                    "this model's tokenizer.model needs sentencepiece: pip install sentencepiece"
                ) from None
        entries = list(vocab.all_tokens())
        tokens = [text.decode("utf-8", errors="replace") for text, _, _ in entries]
        scores = [score for _, score, _ in entries]
        types = [kind for _, _, kind in entries]
        while len(tokens) < vocab_size:  # convert_hf_to_gguf pads the SentencePiece vocab to the embedding rows
            tokens.append(f"[PAD{len(tokens)}]")
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
    if len(tokens) != vocab_size:
        raise FormatError(f"the tokenizer has {len(tokens)} tokens but the model's embeddings have {vocab_size} rows")
    # SentencePiece vocabularies are not pre-split by regex in llama.cpp: "default", as its converter writes.
    pre, how = _pre_tokenizer(folder, pre_tokenizer) if model == "gpt2" else ("default", "sentencepiece")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    if scores is not None:
        writer.add_token_scores(scores)
    writer.add_token_types(types)
    SpecialVocab(folder, load_merges=model == "gpt2", n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    return model, pre, how


def tensor_type(name: str, shape: tuple[int, ...], quant: str, layers: int = 1, has_output: bool = True) -> Any:
    """convert_hf_to_gguf.py's rule: 1-D tensors and norms stay f32; a row that is not a whole number
    of quant blocks falls back to f16. K-quant mixes follow llama-quant.cpp (kquants.k_mix_type)."""
    import gguf

    from lmforge.files.convert.kquants import MIXES, k_mix_type

    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    if quant in MIXES:
        return k_mix_type(name, shape, quant, layers, has_output)
    requested = _gguf_types()[quant][0]
    if requested in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0):
        block, _ = gguf.GGML_QUANT_SIZES[requested]
        if shape[-1] % block:
            return gguf.GGMLQuantizationType.F16
    return requested


def encode_tensor(data: Any, qtype: Any) -> Any:
    """float32 numpy array → the bytes array GGUFWriter.add_tensor takes for `qtype`."""
    import gguf
    import numpy as np

    from lmforge.files.convert.kquants import quantize_k

    if qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    if qtype.name.endswith("_K"):
        return quantize_k(data, qtype)
    return gguf.quants.quantize(data, qtype)


def error_bound(original: Any, qtype: Any) -> Any:
    """Largest allowed |dequantized - original| per element: f16/bf16 rounding, or one quant step of
    the element's block (q8_0: absmax/127, q4_0: absmax/8, q5_0: absmax/16, q5_1: range/31;
    ggml-quants.c quantize_row_q*_ref). K-quants: 1.25 steps of the sub-block, or, where ggml's 6-bit
    (Q6_K: 8-bit) sub-block scale rounds a small sub-block's scale to zero, two steps of that scale
    over the 256-value super-block (measured worst case 0.82 of this bound on normal, Student-t and
    sparse data)."""
    import gguf
    import numpy as np

    q = gguf.GGMLQuantizationType
    magnitude = np.abs(original)
    if qtype == q.F32:
        return np.zeros_like(magnitude)
    if qtype == q.F16:
        return magnitude * 2.0**-11 + 2.0**-24
    if qtype == q.BF16:
        return magnitude * 2.0**-8 + 1e-38
    if qtype in (q.Q4_K, q.Q5_K, q.Q6_K):
        return _k_bound(original, qtype)
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    blocks = original.reshape(-1, block)
    if qtype == q.Q5_1:
        step = (blocks.max(axis=1, keepdims=True) - blocks.min(axis=1, keepdims=True)) / 31.0
    else:
        levels = {q.Q8_0: 127.0, q.Q4_0: 8.0, q.Q5_0: 16.0}[qtype]
        step = magnitude.reshape(-1, block).max(axis=1, keepdims=True) / levels
    step = step * 1.01 + 1e-7  # 1% for the f16-stored scale
    return np.broadcast_to(step, blocks.shape).reshape(original.shape)


def _k_bound(original: Any, qtype: Any) -> Any:
    import gguf
    import numpy as np

    sub, nmax, scale_levels = {
        gguf.GGMLQuantizationType.Q4_K: (32, 15, 63),
        gguf.GGMLQuantizationType.Q5_K: (32, 31, 63),
        gguf.GGMLQuantizationType.Q6_K: (16, 32, 128),
    }[qtype]
    blocks, supers = original.reshape(-1, sub), original.reshape(-1, 256)
    if qtype == gguf.GGMLQuantizationType.Q6_K:
        step = np.abs(blocks).max(axis=1, keepdims=True) / nmax
        spread = np.abs(supers).max(axis=1, keepdims=True)
    else:
        step = (
            np.maximum(blocks.max(axis=1, keepdims=True), 0) - np.minimum(blocks.min(axis=1, keepdims=True), 0)
        ) / nmax
        spread = np.maximum(supers.max(axis=1, keepdims=True), 0) - np.minimum(supers.min(axis=1, keepdims=True), 0)
    per_sub = np.broadcast_to(1.25 * step, blocks.shape).reshape(supers.shape)
    return (np.maximum(per_sub, 2 * spread / scale_levels) * 1.01 + 1e-7).reshape(original.shape)


def _tensor_loaders(folder: Path, trust_pickle: bool) -> dict[str, Callable[[], Any]]:
    """HF name → a function that loads that one tensor: safetensors are read tensor by tensor (a 7B
    model never sits in memory whole); pickles are loaded once through the scanner's gate."""
    files, kind = weight_files(folder)
    loaders: dict[str, Callable[[], Any]] = {}
    if kind == "safetensors":
        from safetensors import safe_open

        for path in files:
            if detect_format(path) != "safetensors":
                raise FormatError(f"{path} is not a safetensors file")
            with safe_open(str(path), framework="pt") as handle:
                names = list(handle.keys())

            def load(name: str, path: Path = path) -> Any:
                with safe_open(str(path), framework="pt") as handle:
                    return handle.get_tensor(name)

            loaders.update({name: partial(load, name) for name in names})
        return loaders
    from lmforge.files.convert.to_safetensors import extract_state_dict

    for path in files:
        tensors = extract_state_dict(safe_torch_load(path, trust_pickle=trust_pickle), path)[0]
        loaders.update({name: partial(tensors.__getitem__, name) for name in tensors})
    return loaders


def _prepare(tensor: Any, hf_name: str, model_type: str, hparams: dict[str, Any]) -> Any:
    """float32 numpy, Q/K rows permuted for llama-style models."""
    data = tensor.float()
    if ARCHITECTURES[model_type].permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        data = permute_qk(data, hparams["n_head"], hparams["n_head"])
    elif ARCHITECTURES[model_type].permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        data = permute_qk(data, hparams["n_head"], hparams["n_head_kv"])
    return data.numpy()


def _prepared_tensors(
    folder: Path, config: dict[str, Any], model_type: str, hparams: dict[str, Any], trust_pickle: bool
) -> dict[str, Callable[[], Any]]:
    """GGUF name → a function giving the float32 numpy array llama.cpp expects under that name."""
    import gguf

    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type].gguf_arch)
    name_map = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    prepared: dict[str, Callable[[], Any]] = {}
    unknown = []
    for hf_name, load in _tensor_loaders(folder, trust_pickle).items():
        if _SKIP_TENSORS.search(hf_name):
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            unknown.append(hf_name)
            continue
        # defaults bind this iteration's loader and name; mypy cannot infer a lambda's default-argument types
        prepared[gguf_name] = lambda load=load, hf_name=hf_name: _prepare(load(), hf_name, model_type, hparams)  # type: ignore[misc]
    if unknown:
        raise FormatError(f"no GGUF name for {len(unknown)} tensor(s) of this {model_type} model, e.g. {unknown[0]}")
    if hparams["rope"]["rope_type"] == "llama3":
        prepared[gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = partial(
            llama3_rope_factors, hparams["rope"], hparams["head_dim"]
        )
    return prepared


def _verify(
    path: Path, prepared: dict[str, Callable[[], Any]], types: dict[str, Any], model_type: str
) -> dict[str, Any]:
    """Read the GGUF back: metadata keys, every tensor's shape and type, dequantized values in bound."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(path)
    arch_name = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type].gguf_arch)]
    required = [
        "general.architecture",
        f"{arch_name}.block_count",
        f"{arch_name}.embedding_length",
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
    ]
    missing = [key for key in required if key not in reader.fields]
    if missing:
        raise FormatError(f"{path.name} is missing metadata {', '.join(missing)}")
    read = {tensor.name: tensor for tensor in reader.tensors}
    if set(read) != set(prepared):
        raise FormatError(f"{path.name} holds {len(read)} tensors, expected {len(prepared)}")
    worst: dict[str, float] = {}
    for name, load in prepared.items():
        original = load()
        tensor = read[name]
        if tuple(int(d) for d in reversed(tensor.shape)) != original.shape or tensor.tensor_type != types[name]:
            raise FormatError(
                f"{path.name}: tensor {name} read back as {tensor.tensor_type.name} "
                f"{list(reversed(tensor.shape))}, expected {types[name].name} {list(original.shape)}"
            )
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(original.shape)
        error = np.abs(values.astype(np.float32) - original)
        if (error > error_bound(original, tensor.tensor_type)).any():
            raise FormatError(
                f"{path.name}: tensor {name} differs from the source beyond the {tensor.tensor_type.name} bound"
            )
        kind = tensor.tensor_type.name.lower()
        worst[kind] = max(worst.get(kind, 0.0), float(error.max()))
    return worst


def to_gguf(
    source: Path,
    destination: Path,
    *,
    quant: str = "f16",
    pre_tokenizer: str | None = None,
    trust_pickle: bool = False,
    progress: bool = True,
) -> ConvertReport:
    """Write the HF model folder `source` as one GGUF file `destination` in `quant`.

    `pre_tokenizer` forces tokenizer.ggml.pre (a llama.cpp name) instead of detecting it."""
    import gguf

    started = time.perf_counter()
    if quant not in QUANTS:
        raise UserInputError(f"unknown --quant {quant!r}; choose one of {', '.join(QUANTS)}")
    if not source.is_dir() or not (source / "config.json").is_file():
        raise UserInputError(
            f"{source} is not an HF model folder with config.json; GGUF export needs the "
            "architecture and tokenizer that live beside the weights"
        )
    config = read_json(source / "config.json")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise UserInputError(f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {model_type!r}")
    file_type = _gguf_types()[quant][1]
    arch_name = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type].gguf_arch)]

    with atomic_path(destination) as temporary:
        writer = gguf.GGUFWriter(temporary, arch_name, use_temp_file=True)
        hparams = _write_hparams(writer, config, model_type, source.name, file_type)
        prepared = _prepared_tensors(source, config, model_type, hparams, trust_pickle)
        vocab_rows = prepared["token_embd.weight"]().shape[0]
        writer.add_vocab_size(vocab_rows)
        tokenizer_model, pre, pre_how = _write_vocab(writer, source, vocab_rows, pre_tokenizer)
        types: dict[str, Any] = {}
        prepared_shapes: dict[str, tuple[int, ...]] = {}
        params = 0
        with progress_bar(f"quantizing to {quant}", len(prepared), progress) as advance:
            for name, load in prepared.items():
                data = load()
                params += int(data.size)
                prepared_shapes[name] = data.shape
                types[name] = tensor_type(
                    name, data.shape, quant, config["num_hidden_layers"], has_output="output.weight" in prepared
                )
                writer.add_tensor(name, encode_tensor(data, types[name]), raw_dtype=types[name])
                advance()
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        worst = _verify(temporary, prepared, types, model_type)

    notes = []
    fallback = [
        name for name, qtype in types.items() if qtype == gguf.GGMLQuantizationType.F16 and quant in ("q8_0", "q4_0")
    ]
    if fallback:
        notes.append(
            f"{len(fallback)} tensor(s) kept in f16: their rows are not whole {quant} blocks (e.g. {fallback[0]})"
        )
    k_fallback = [
        name
        for name, qtype in types.items()
        if quant in ("q4_k_m", "q5_k_m", "q6_k")
        and len(prepared_shapes[name]) > 1
        and not qtype.name.endswith("_K")
        and qtype.name != "F32"
    ]
    if k_fallback:
        notes.append(
            f"{len(k_fallback)} tensor(s) not in K-quants: rows not whole 256-value super-blocks, so "
            f"llama.cpp's fallback type was used (e.g. {k_fallback[0]} as {types[k_fallback[0]].name})"
        )
    if pre_how == "given":
        notes.append(f"tokenizer.ggml.pre {pre!r} was forced, not checked against the tokenizer's own split")
    counts: dict[str, int] = {}
    for qtype in types.values():
        counts[qtype.name.lower()] = counts.get(qtype.name.lower(), 0) + 1
    return ConvertReport(
        source=str(source),
        destination=str(destination),
        to="gguf",
        quant=quant,
        files=[str(destination)],
        tensor_count=len(prepared),
        params=params,
        size_bytes=destination.stat().st_size,
        seconds=time.perf_counter() - started,
        verified=True,
        checks={
            "architecture": arch_name,
            "tokenizer": tokenizer_model,
            "pre_tokenizer": pre,
            "pre_tokenizer_found_by": pre_how,
            "tensor_types": counts,
            "max_abs_error": worst,
        },
        notes=notes,
    )

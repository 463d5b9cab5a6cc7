"""What is in a model file or folder, read from headers only.

`inspect_path` detects the format by bytes, reads tensor tables through the hardened readers
(safetensors, GGUF, torch pickles by symbolic opcode walk, npy headers, ONNX protos), then adds up
parameters by dtype and component, infers quantisation and bits per weight, reads the architecture
from config.json or GGUF key/values, asks the pickle scanner for a verdict, and says which runtimes
can load the result. No tensor data is read, so a 100 GB checkpoint inspects as fast as a 1 MB one.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError, NotFoundError
from lmforge.files.detect import SAFETENSORS_INDEX, Format, detect_format
from lmforge.files.lowrank import LOWRANK_FILE, is_factorized
from lmforge.files.names import ModelName, parse_model_name
from lmforge.plan.families import CONFIG_ALIASES

PICKLE_FORMATS = {"torch-zip", "torch-legacy", "pickle", "npy", "npz", "torchscript", "zip"}
_TORCH_FORMATS = {"torch-zip", "torch-legacy"}
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt", "vocab.json",
    "merges.txt", "special_tokens_map.json", "chat_template.jinja",
)  # fmt: skip

# Tensor name → component, first match wins (Llama/Qwen/Mixtral/DeepSeek/GPT-2/BERT/T5 and GGUF names).
_COMPONENT_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("adapter", re.compile(r"lora_(a|b|embedding_a|embedding_b|magnitude)\b|\.lora_")),
    ("norms", re.compile(r"norm|(^|\.)ln_(\d+|f)\b|layer_norm")),
    ("head", re.compile(r"(^|\.)(lm_head|cls|classifier|score|pooler|qa_outputs)\.|^output\.(weight|bias)$")),
    ("experts", re.compile(r"\.experts\.|_exps\b")),
    ("attention", re.compile(r"attn|attention|(^|\.)(q|k|v|o)_proj\b|\.(query|key|value)\.|\.(q|k|v|o)\.weight")),
    ("mlp", re.compile(r"mlp|ffn|feed_forward|intermediate|densereludense|\.output\.dense|(gate|up|down)_proj|\.w[123]\.|shared_expert")),
    ("embeddings", re.compile(r"embed|(^|\.)(wte|wpe|shared)\.|token_embd|position")),
]  # fmt: skip
# Tensors that are a module's state rather than its weights (transformers registers them as buffers): they are
# not in model.parameters(), so counting them would disagree with transformers (MiniLM's position_ids: 512).
_BUFFER_NAMES = {"position_ids", "token_type_ids", "inv_freq", "masked_bias", "_float_tensor"}
# Integer and boolean dtypes (safetensors/torch, ONNX, GGUF spellings): never trainable, so buffers unless the
# model is quantised (packed GPTQ/bitsandbytes weights are integers).
_INTEGER_DTYPES = {
    "BOOL",
    "I8",
    "I16",
    "I32",
    "I64",
    "U8",
    "U16",
    "U32",
    "U64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
}
# Quantisation side tensors (zeros, scales, group indices, absmax, FP8 scales, torchao's flattened
# _weight_scale/_weight_zero_point): bytes that hold no weights themselves.
_QUANT_AUX = re.compile(
    r"\.(qzeros|scales|g_idx|absmax|quant_map|quant_state\..*|nested_absmax|nested_quant_map|weight_scale(_inv)?|input_scale"
    r"|_weight_scale|_weight_zero_point)$"
)


@dataclass
class TensorEntry:
    name: str
    dtype: str  # safetensors names (F32, BF16), GGUF quant types (Q4_K, Q8_0) or torch storage dtypes
    shape: list[int]  # PyTorch (row-major) order for every format; GGUF's own order is reversed
    params: int  # logical weights: packed 4-bit tensors count their unpacked values, scales count 0
    size_bytes: int
    component: str
    file: str
    # parameter | buffer (position ids, rotary inv_freq, integer tables: state, not weights) | shared (a copy of
    # another tensor's values, as an ONNX exporter writes a tied lm_head): only parameters are counted as such.
    role: str = "parameter"


@dataclass
class FileEntry:
    name: str
    format: str
    size_bytes: int


@dataclass
class ScanSummary:
    verdict: str  # safe | unsafe | unproven | error | not-needed
    detail: str


@dataclass
class RuntimeSupport:
    runtime: str
    can_load: bool
    reason: str


@dataclass
class InspectReport:
    path: str
    format: str
    files: list[FileEntry] = field(default_factory=list)
    total_size_bytes: int = 0
    tensor_count: int = 0
    total_params: int = 0  # parameters only: buffers and shared copies are reported apart
    buffers: dict[str, int] = field(default_factory=dict)  # buffer name -> elements
    shared: dict[str, str] = field(default_factory=dict)  # tensor that repeats another's values -> that tensor
    params_by_dtype: dict[str, int] = field(default_factory=dict)
    params_by_component: dict[str, int] = field(default_factory=dict)
    quantization: str | None = None
    bits_per_weight: float | None = None  # stored tensor bits per logical weight (scales included)
    architecture: str | None = None
    model_type: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the few config facts a user asks first
    num_experts: int | None = None
    experts_per_token: int | None = None
    active_params: int | None = None  # per token; equals total_params for a dense model
    metadata: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)  # generation_config.json: eos ids, sampling defaults
    onnx: dict[str, Any] = field(default_factory=dict)  # opsets, inputs, outputs
    name: ModelName | None = None
    scan: ScanSummary | None = None
    runtimes: list[RuntimeSupport] = field(default_factory=list)
    tensors: list[TensorEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    return str(value)


def component_of(name: str) -> str:
    """Which part of the model a tensor belongs to, from its name."""
    lowered = name.lower()
    for component, pattern in _COMPONENT_RULES:
        if pattern.search(lowered):
            return component
    return "other"


# ----------------------------------------------------------------------------------- tensor tables


def _safetensors_tensors(path: Path) -> tuple[list[TensorEntry], dict[str, str]]:
    from lmforge.files.safetensors_reader import read_safetensors_header

    header = read_safetensors_header(path)
    tensors = [
        TensorEntry(t.name, t.dtype, list(t.shape), t.num_params, t.size_bytes, component_of(t.name), path.name)
        for t in header.tensors
    ]
    return tensors, header.metadata


def _sharded_files(index_path: Path) -> list[Path]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        shard_names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise FormatError(f"{index_path.name}: not a valid shard index ({error})") from None
    shards = []
    for shard_name in shard_names:
        shard = index_path.parent / str(shard_name)
        if not shard.is_file():
            raise NotFoundError(f"{index_path.name} names shard {shard_name} but {shard} does not exist")
        shards.append(shard)
    return shards


def _gguf_tensors(path: Path) -> tuple[list[TensorEntry], dict[str, Any]]:
    from lmforge.files.gguf_reader import read_gguf_header

    header = read_gguf_header(path)
    tensors = [
        TensorEntry(
            t.name, t.ggml_type, list(reversed(t.shape)), t.num_params, t.size_bytes, component_of(t.name), path.name
        )
        for t in header.tensors
    ]
    metadata = {"gguf.version": header.version, **header.metadata}
    return tensors, metadata


def _torch_tensors(path: Path) -> list[TensorEntry]:
    from lmforge.files.torch_zip import list_torch_tensors

    return [
        TensorEntry(t.name, t.dtype, list(t.shape), t.num_params, t.size_bytes, component_of(t.name), path.name)
        for t in list_torch_tensors(path)
    ]


def _npy_entry(name: str, handle: Any, file_name: str) -> TensorEntry:
    import numpy as np

    try:
        version = np.lib.format.read_magic(handle)
        # Any: max_header_size (numpy >= 1.24) is missing from some numpy versions' stubs
        read_header: Any = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(handle, max_header_size=100_000)
    except (ValueError, SyntaxError, EOFError, OSError) as error:
        raise FormatError(f"{file_name}: bad .npy header for {name}: {error}") from None
    params = int(np.prod(shape, dtype=object)) if shape else 1
    dtype_name = "object" if dtype.hasobject else dtype.str
    return TensorEntry(name, dtype_name, list(shape), params, params * dtype.itemsize, component_of(name), file_name)


def _numpy_tensors(path: Path, fmt: str) -> list[TensorEntry]:
    if fmt == "npy":
        with path.open("rb") as handle:
            return [_npy_entry(path.stem, handle, path.name)]
    try:
        with zipfile.ZipFile(path) as archive:
            entries = []
            for info in archive.infolist():
                with archive.open(info) as handle:
                    entries.append(_npy_entry(info.filename.removesuffix(".npy"), handle, path.name))
            return entries
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as error:
        raise FormatError(f"{path.name}: cannot read the .npz archive: {error}") from None


def _onnx_tensors(path: Path) -> tuple[list[TensorEntry], dict[str, Any], dict[str, str]]:
    try:
        import onnx
        from onnx import helper
    except ImportError as error:  # pragma: no cover - onnx is a declared dependency
        from lmforge.errors import DependencyError

        raise DependencyError("inspecting ONNX needs the onnx package: pip install onnx") from error
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and friends from protobuf
        raise FormatError(f"{path.name}: not a readable ONNX model ({type(error).__name__}: {error})") from None

    def describe(value: Any) -> dict[str, Any]:
        tensor_type = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_string(tensor_type.elem_type).removeprefix("TensorProto.")
        return {"name": value.name, "dtype": dtype, "shape": dims}

    tensors = []
    copies = _onnx_copies(model)
    for initializer in model.graph.initializer:
        params = 1
        for dim in initializer.dims:
            params *= dim
        itemsize = helper.tensor_dtype_to_np_dtype(initializer.data_type).itemsize
        dtype = helper.tensor_dtype_to_string(initializer.data_type).removeprefix("TensorProto.")
        original = copies.get(initializer.name)
        tensors.append(
            TensorEntry(initializer.name, dtype, list(initializer.dims), params, params * itemsize,
                        component_of(original or initializer.name), path.name,
                        role="shared" if original else "parameter")
        )  # fmt: skip
    initializer_names = {i.name for i in model.graph.initializer}
    info = {
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        "inputs": [describe(v) for v in model.graph.input if v.name not in initializer_names],
        "outputs": [describe(v) for v in model.graph.output],
        "nodes": len(model.graph.node),
    }
    return tensors, info, copies


def _onnx_copies(model: Any) -> dict[str, str]:
    """2-D initializers whose values repeat an earlier one's, as is or transposed: copy name -> original name.

    Exporters write a tied lm_head as its own initializer holding the embedding's transpose (the TorchScript
    exporter folds the transpose into a constant), so counting every initializer counts the tie twice. Only
    matrices are compared: equal 1-D tensors (all-ones norms) are separate weights that start out alike.
    """
    import hashlib

    import numpy as np
    from onnx import TensorProto, numpy_helper

    seen: dict[tuple[str, tuple[int, ...], str], str] = {}
    copies: dict[str, str] = {}
    for initializer in model.graph.initializer:
        if len(initializer.dims) != 2 or initializer.data_location == TensorProto.EXTERNAL:
            continue
        array = numpy_helper.to_array(initializer)

        def key(values: Any) -> tuple[str, tuple[int, ...], str]:
            return values.dtype.str, values.shape, hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()

        own = key(array)
        original = seen.get(own) or seen.get(key(array.T))
        if original is not None:
            copies[initializer.name] = original
        else:
            seen[own] = initializer.name
    return copies


# -------------------------------------------------------------------------------------- summaries


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"{path.name}: not valid JSON ({error})") from None
    return value if isinstance(value, dict) else {}


# The config facts an inspection reports, each read under the aliases the planner reads it by.
_CONFIG_FACTS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_attention_heads",
    "num_kv_heads",
    "intermediate_size",
    "max_position_embeddings",
    "dtype",
    "tie_word_embeddings",
)


def _config_facts(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    if not isinstance(text, dict):  # a multimodal wrapper keeps the language model's config here
        text = config
    facts = {}
    for fact in _CONFIG_FACTS:
        names = CONFIG_ALIASES[fact]
        for name in names:
            if text.get(name) is not None:
                facts[fact] = text[name]
                break
    return facts


def _experts_from_config(config: dict[str, Any]) -> tuple[int | None, int | None]:
    text = config.get("text_config")
    if not isinstance(text, dict):  # a multimodal wrapper keeps the language model's config here
        text = config
    experts = next((text[k] for k in CONFIG_ALIASES["num_experts"] if text.get(k)), None)
    used = next((text[k] for k in CONFIG_ALIASES["experts_per_token"] if text.get(k)), None)
    return experts, used


def _torchao_kind(quant_config: dict[str, Any]) -> str:
    """torchao's config as transformers serialises it (quant_type.default._type, and _data.weight_dtype for
    the Intx configs): "Int8WeightOnlyConfig", "IntxWeightOnlyConfig int4"; "?" when it is not that shape."""

    def field(value: Any, key: str) -> Any:  # any level may be another shape (older configs store a string)
        return value.get(key) if isinstance(value, dict) else None

    default = field(field(quant_config, "quant_type"), "default")
    kind = field(default, "_type")
    if not isinstance(kind, str):
        return "?"
    dtype = field(field(field(default, "_data"), "weight_dtype"), "_data")
    return kind + (f" {dtype.removeprefix('torch.')}" if isinstance(dtype, str) else "")


def _apply_quantization_params(tensors: list[TensorEntry], config: dict[str, Any]) -> str | None:
    """Turn packed storage into logical weights and name the quantisation scheme, if any."""
    quant_config = config.get("quantization_config")
    if not isinstance(quant_config, dict):
        quant_config = {}
    method = str(quant_config.get("quant_method") or "").lower()
    bits = int(quant_config.get("bits") or quant_config.get("w_bit") or 4)
    names = {t.name for t in tensors}
    if not method:
        if any(n.endswith(".qweight") for n in names):
            method = "gptq"
        elif any(n.endswith(".absmax") or ".quant_state." in n for n in names):
            method = "bitsandbytes"
    if quant_config.get("load_in_4bit") or quant_config.get("_load_in_4bit"):
        bits = 4
    elif quant_config.get("load_in_8bit") or quant_config.get("_load_in_8bit"):
        bits = 8
    for tensor in tensors:
        if _QUANT_AUX.search(tensor.name):
            tensor.params = 0
        elif tensor.name.endswith(".qweight"):
            tensor.params = tensor.size_bytes * 8 // bits  # int32 words of packed `bits`-bit weights
        elif method == "bitsandbytes" and bits == 4 and tensor.dtype == "U8" and f"{tensor.name}.absmax" in names:
            tensor.params = tensor.size_bytes * 2
    if method == "torchao":
        return f"TORCHAO {_torchao_kind(quant_config)}"
    if method:
        return f"{method.upper()} {bits}-bit" if method in ("gptq", "awq", "bitsandbytes") else method.upper()
    if any(t.dtype.startswith("F8") for t in tensors):
        return "FP8"
    return None


def _gguf_quantization(metadata: dict[str, Any], tensors: list[TensorEntry]) -> str | None:
    file_type = metadata.get("general.file_type")
    if isinstance(file_type, int):
        from gguf.constants import LlamaFileType

        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_") + " (GGUF file type)"
        except ValueError:
            pass
    by_bytes: dict[str, int] = {}
    for tensor in tensors:
        by_bytes[tensor.dtype] = by_bytes.get(tensor.dtype, 0) + tensor.size_bytes
    return max(by_bytes, key=by_bytes.__getitem__) if by_bytes else None


def _tokenizer_summary(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    files = [name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    if not files:
        return {}
    summary: dict[str, Any] = {"files": files}
    tokenizer_config = folder / "tokenizer_config.json"
    has_template = (folder / "chat_template.jinja").is_file()
    if tokenizer_config.is_file():
        settings = _read_json(tokenizer_config)
        has_template = has_template or bool(settings.get("chat_template"))
        summary["class"] = settings.get("tokenizer_class")
    summary["chat_template"] = has_template
    if config.get("vocab_size"):
        summary["vocab_size"] = config["vocab_size"]
    return summary


def _gguf_tokenizer(metadata: dict[str, Any]) -> dict[str, Any]:
    from lmforge.files.gguf_reader import ArraySummary

    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is None and "tokenizer.ggml.model" not in metadata:
        return {}
    count = tokens.length if isinstance(tokens, ArraySummary) else len(tokens or [])
    return {
        "model": metadata.get("tokenizer.ggml.model"),
        "vocab_size": count,
        "chat_template": "tokenizer.chat_template" in metadata,
    }


def _scan(paths: list[Path], fmt: str) -> ScanSummary:
    if not paths:
        return ScanSummary("not-needed", f"{fmt} holds no pickle, so loading it cannot run code")
    from lmforge.files.scan import scan_path

    verdicts = []
    for path in paths:
        for file_report in scan_path(path).files:
            verdicts.append((Path(file_report.path).name, file_report.verdict, len(file_report.findings)))
    for wanted in ("unsafe", "unproven", "error"):
        bad = [v for v in verdicts if v[1] == wanted]
        if bad:
            names = ", ".join(f"{name} ({count} findings)" for name, _, count in bad)
            return ScanSummary(wanted, f"{names}: run `lmforge scan` for details; do not load it")
    return ScanSummary("safe", f"scanned {len(paths)} file(s): pickles use only allowlisted globals")


def _transformers_has(model_type: str | None) -> bool:
    """Whether the installed transformers has this model type, found without importing transformers."""
    import importlib.util

    if not model_type:
        return False
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return False
    return (Path(spec.origin).parent / "models" / model_type.replace("-", "_")).is_dir()


def _transformers_gguf_architectures() -> set[str]:
    """Architectures transformers can dequantise from GGUF (keys of GGUF_CONFIG_MAPPING), read by ast."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return set()
    source = Path(spec.origin).parent / "integrations" / "ggml.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return set()
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(getattr(t, "id", "") == "GGUF_CONFIG_MAPPING" for t in node.targets)
        ):
            keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            return keys - {"general", "tokenizer"}
    return set()


def _llama_cpp_architectures() -> set[str]:
    """The GGUF architectures llama.cpp runs (runtimes.json, read from llama.cpp's own list)."""
    import json

    return set(json.loads((Path(__file__).with_name("runtimes.json")).read_text(encoding="utf-8"))["llama.cpp"])


def _runtimes(report: InspectReport, has_config: bool) -> list[RuntimeSupport]:
    fmt, arch = report.format, report.model_type
    unsafe = report.scan is not None and report.scan.verdict in ("unsafe", "unproven", "error")
    weights = {f.format for f in report.files}
    hf_weights = bool(weights & ({"safetensors"} | _TORCH_FORMATS))
    result = []
    if fmt == "peft-adapter-dir":
        result.append(RuntimeSupport("transformers", not unsafe, "with peft: PeftModel.from_pretrained(base, adapter)"))
        result.append(RuntimeSupport("vLLM", not unsafe, "as a LoRA adapter: --enable-lora --lora-modules name=path"))
        result.append(RuntimeSupport("llama.cpp", False, "convert the adapter to GGUF (convert_lora_to_gguf.py)"))
        result.append(RuntimeSupport("onnxruntime", False, "merge the adapter and export to ONNX first"))
        return result
    if fmt == "gguf":
        supported = arch in _transformers_gguf_architectures()
        reason = (f"from_pretrained(gguf_file=...) dequantises {arch} to full precision" if supported
                  else f"transformers cannot read GGUF architecture {arch!r}")  # fmt: skip
        result.append(RuntimeSupport("transformers", supported, reason))
        in_llama_cpp = arch in _llama_cpp_architectures()
        result.append(
            RuntimeSupport(
                "llama.cpp",
                in_llama_cpp,
                f"native format; llama.cpp runs architecture {arch}"
                if in_llama_cpp
                else f"llama.cpp has no architecture {arch!r} (llama-arch.cpp)",
            )
        )
        # vLLM reads a GGUF's config and tokenizer through transformers' GGUF support, so it needs the same
        # architectures, and since 2026 the vllm-gguf-plugin (GGUF left vLLM's core), on a GPU.
        result.append(
            RuntimeSupport(
                "vLLM",
                supported,
                "experimental: needs vllm-gguf-plugin and a GPU; the HF model is faster"
                if supported
                else f"vLLM reads GGUF through transformers, which cannot read architecture {arch!r}",
            )
        )
        result.append(RuntimeSupport("onnxruntime", False, "GGUF is llama.cpp's format; export ONNX from the HF model"))
        return result
    if fmt in ("onnx", "onnx-model-dir"):
        result.append(RuntimeSupport("onnxruntime", True, f"native format (opsets {report.onnx.get('opsets', {})})"))
        for runtime in ("transformers", "llama.cpp", "vLLM"):
            result.append(RuntimeSupport(runtime, False, "ONNX graphs run in onnxruntime; use the original HF model"))
        return result
    if unsafe:
        reason = "the pickle scanner could not prove it safe: do not load it"
        return [RuntimeSupport(r, False, reason) for r in ("transformers", "llama.cpp", "vLLM", "onnxruntime")]
    known = _transformers_has(arch)
    if has_config and hf_weights and known:
        result.append(RuntimeSupport("transformers", True, f"config.json ({report.architecture}) with weights"))
    elif has_config and hf_weights:
        result.append(
            RuntimeSupport("transformers", False, f"model type {arch!r} is not in the installed transformers")
        )
    elif hf_weights:
        result.append(
            RuntimeSupport("transformers", False, "weights only: needs config.json beside them (a model folder)")
        )
    elif has_config:
        result.append(RuntimeSupport("transformers", False, "config.json but no safetensors or .bin weights beside it"))
    else:
        result.append(RuntimeSupport("transformers", False, f"{fmt} is not a transformers weight format"))
    vllm_ok = has_config and hf_weights and report.config.get("num_layers") is not None and fmt == "hf-model-dir"
    result.append(RuntimeSupport(
        "vLLM", vllm_ok,
        "an HF model folder; vLLM must support the architecture" if vllm_ok else "vLLM loads HF model folders",
    ))  # fmt: skip
    result.append(RuntimeSupport("llama.cpp", False, "needs GGUF: `lmforge convert MODEL model.gguf`"))
    result.append(RuntimeSupport("onnxruntime", False, "needs ONNX: `lmforge convert MODEL model.onnx`"))
    return result


# ------------------------------------------------------------------------------------------- main


def _weight_files(folder: Path) -> tuple[list[Path], str | None]:
    """The weight files of a model folder, and the index that lists them if sharded."""
    for index_name in (SAFETENSORS_INDEX, "pytorch_model.bin.index.json", "adapter_model.safetensors.index.json"):
        if (folder / index_name).is_file():
            return _sharded_files(folder / index_name), index_name
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "onnx/*.onnx"):
        found = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
        if found:
            return found, None
    return [], None


_GGUF_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def _gguf_split_files(path: Path) -> list[Path]:
    """All files of a split GGUF (model-00001-of-00003.gguf, as gguf-split and GGUFWriter name them)."""
    match = _GGUF_SPLIT.match(path.name)
    if match is None or int(match["count"]) < 2:
        return [path]
    count = int(match["count"])
    files = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise NotFoundError(f"{path.name} is part {match['index']} of {count}, but {', '.join(missing[:3])} is missing")
    return files


def _read_file(path: Path, fmt: str, report: InspectReport) -> list[TensorEntry]:
    if fmt == "safetensors":
        tensors, metadata = _safetensors_tensors(path)
        report.metadata.update(metadata)
        return tensors
    if fmt == "gguf":
        tensors, metadata = _gguf_tensors(path)
        for key, value in metadata.items():  # a split's first file holds the model's metadata
            report.metadata.setdefault(key, value)
        return tensors
    if fmt in _TORCH_FORMATS:
        return _torch_tensors(path)
    if fmt in ("npy", "npz"):
        return _numpy_tensors(path, fmt)
    if fmt == "onnx":
        tensors, report.onnx, copies = _onnx_tensors(path)
        report.shared.update(copies)
        return tensors
    if fmt in ("pickle", "torchscript", "zip"):
        report.notes.append(f"{path.name}: {fmt} has no tensor table to read without running it; see `lmforge scan`")
        return []
    raise FormatError(f"{path.name}: a {fmt} container; unpack it first, then inspect or scan what is inside")


def inspect_path(path: str | os.PathLike[str]) -> InspectReport:
    """Inspect a model file, a model or adapter folder, or a shard index on this machine.

    What a user typed (a hub id, a training run) is resolved first by lmforge.hub.locate_model, as `lmforge
    inspect` does: inspect_path(locate_model("org/name", need="any").path)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist; give a model file or folder")
    fmt: Format = detect_format(path)
    report = InspectReport(path=str(path), format=fmt)
    folder = path if path.is_dir() else path.parent
    config: dict[str, Any] = {}
    if path.is_dir():
        files, index_name = _weight_files(path)
        if fmt == "hf-model-dir":
            config = _read_json(path / "config.json")
        elif fmt == "peft-adapter-dir":
            adapter = _read_json(path / "adapter_config.json")
            keys = ("peft_type", "base_model_name_or_path", "r", "lora_alpha", "target_modules", "task_type")
            report.metadata.update({k: adapter[k] for k in keys if k in adapter})
        if index_name:
            report.notes.append(f"sharded: {index_name} lists {len(files)} shard(s)")
    elif fmt == "safetensors-sharded":
        files = _sharded_files(path)
        if (folder / "config.json").is_file():
            config = _read_json(folder / "config.json")
    elif fmt == "gguf":
        files = _gguf_split_files(path)
        if len(files) > 1:
            report.notes.append(f"GGUF split into {len(files)} files (gguf-split naming)")
    else:
        files = [path]
    if not files and path.is_dir():
        report.notes.append("no weight files found in this folder")
    tensors: list[TensorEntry] = []
    formats = {}
    for file in files:
        formats[file] = detect_format(file)
        tensors.extend(_read_file(file, formats[file], report))
        report.files.append(FileEntry(file.name, formats[file], file.stat().st_size))
    report.total_size_bytes = sum(f.size_bytes for f in report.files)
    report.tensors = tensors
    report.tensor_count = len(tensors)
    if fmt == "hf-model-dir" and files and all(formats[file] == "onnx" for file in files):
        report.format = "onnx-model-dir"  # config.json beside an ONNX graph (an export), not transformers weights

    if config:
        architectures = config.get("architectures") or []
        report.architecture = architectures[0] if architectures else None
        report.model_type = config.get("model_type")
        report.config = _config_facts(config)
        report.tokenizer = _tokenizer_summary(folder, report.config)
        if (folder / "generation_config.json").is_file():
            generation = _read_json(folder / "generation_config.json")
            report.generation = {k: v for k, v in generation.items() if k != "transformers_version"}
    if fmt == "gguf":
        arch = report.metadata.get("general.architecture")
        report.model_type = report.architecture = arch if isinstance(arch, str) else None
        gguf_keys = ("block_count", "context_length", "embedding_length", "head_count", "head_count_kv")
        report.config = {k: report.metadata[f"{arch}.{k}"] for k in gguf_keys if f"{arch}.{k}" in report.metadata}
        report.tokenizer = _gguf_tokenizer(report.metadata)
        report.quantization = _gguf_quantization(report.metadata, tensors)
    else:
        report.quantization = _apply_quantization_params(tensors, config)
        if fmt != "gguf" and is_factorized(path):
            ranks = _read_json(path / LOWRANK_FILE).get("ranks") or {}
            low_rank = f"low-rank SVD, {len(ranks)} layers (lmforge compress factorize)"
            report.quantization = f"{report.quantization}; {low_rank}" if report.quantization else low_rank

    _mark_buffers(tensors, quantized=report.quantization is not None)
    parameters = [t for t in tensors if t.role == "parameter"]
    report.buffers = {t.name: t.params for t in tensors if t.role == "buffer"}
    for tensor in parameters:
        report.params_by_dtype[tensor.dtype] = report.params_by_dtype.get(tensor.dtype, 0) + tensor.params
        report.params_by_component[tensor.component] = (
            report.params_by_component.get(tensor.component, 0) + tensor.params
        )
    report.total_params = sum(t.params for t in parameters)
    if report.total_params:
        report.bits_per_weight = round(sum(t.size_bytes for t in parameters) * 8 / report.total_params, 3)
    if report.buffers:
        elements = sum(report.buffers.values())
        report.notes.append(
            f"{len(report.buffers)} buffer(s) not counted as parameters ({elements:,} elements: "
            f"{', '.join(list(report.buffers)[:3])}), as transformers counts them"
        )
    if report.shared:
        shown = ", ".join(f"{copy} = {original}" for copy, original in list(report.shared.items())[:3])
        report.notes.append(
            f"{len(report.shared)} initializer(s) repeat another's values, counted once ({shown}: a "
            "tied weight the exporter wrote twice); exporters also merge equal constants, so an ONNX "
            "count can sit below the original model's"
        )
    _fill_experts(report, config)
    if not tensors and config:
        _fill_from_config(report, config, path)

    report.name = _name_of(path, report.metadata, config)
    pickles = [f for f in files if formats[f] in PICKLE_FORMATS]
    report.scan = _scan(pickles, fmt)
    report.runtimes = _runtimes(report, has_config=bool(config))
    return report


def _mark_buffers(tensors: list[TensorEntry], quantized: bool) -> None:
    """Tensors that transformers keeps as buffers: known buffer names, and integer tables in an unquantised file."""
    for tensor in tensors:
        if tensor.role != "parameter":
            continue
        leaf = tensor.name.rsplit(".", 1)[-1]
        numpy_integer = len(tensor.dtype) > 1 and tensor.dtype[0] in "<>|=" and tensor.dtype[1] in "iub"  # .npy: '<i8'
        integer = tensor.dtype.upper() in _INTEGER_DTYPES or numpy_integer
        if leaf in _BUFFER_NAMES or (integer and not quantized):
            tensor.role = "buffer"


def _name_of(path: Path, metadata: dict[str, Any], config: dict[str, Any]) -> ModelName | None:
    """What the model's name says, if it says anything beyond a family (GGUF name, hub id, file name)."""
    candidates = [metadata.get("general.name"), config.get("_name_or_path")]
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        candidates.append(path.parent.parent.name.removeprefix("models--").replace("--", "/"))
    candidates.append(path.name)
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            parsed = parse_model_name(candidate)
            said = (parsed.total_params, parsed.active_params, parsed.num_experts, parsed.variant, parsed.quantization)
            if any(value is not None for value in said):
                return parsed
    return None


def _fill_from_config(report: InspectReport, config: dict[str, Any], path: Path) -> None:
    """No weights to count (a config-only folder): the planner's exact count from the architecture."""
    from lmforge.errors import ConfigError
    from lmforge.plan.models import spec_from_config
    from lmforge.plan.params import count_params

    try:
        counts = count_params(spec_from_config(config, name=path.name, source=str(path)))
    except (ConfigError, KeyError, ValueError, TypeError) as error:
        report.notes.append(f"no weights, and the planner cannot count this config: {error}")
        return
    report.total_params, report.active_params = counts.total_params, counts.active_params
    report.params_by_component = {k: v for k, v in counts.by_component.items() if v}
    report.notes.append("no weight files: parameter counts are computed from config.json by the planner")


def _fill_experts(report: InspectReport, config: dict[str, Any]) -> None:
    """MoE total vs active: routed expert weights count k/E of themselves per token."""
    if report.format == "gguf":
        arch = report.model_type
        experts, used = report.metadata.get(f"{arch}.expert_count"), report.metadata.get(f"{arch}.expert_used_count")
    else:
        experts, used = _experts_from_config(config)
    expert_params = report.params_by_component.get("experts", 0)
    report.active_params = report.total_params
    if isinstance(experts, int) and isinstance(used, int) and experts > 0:
        report.num_experts, report.experts_per_token = experts, used
        # Active = everything except the routed experts not chosen (Mixtral paper: 46.7B total, 12.9B active).
        report.active_params = report.total_params - expert_params * (experts - used) // experts
        if not expert_params and report.tensor_count:
            report.notes.append("config declares experts but no expert tensors were found by name")


def filter_tensors(tensors: list[TensorEntry], pattern: str) -> list[TensorEntry]:
    """Tensors whose name matches `pattern`: a glob when it has * ? or [, else a regular expression."""
    import fnmatch

    from lmforge.errors import UserInputError

    if any(char in pattern for char in "*?[") and not pattern.startswith("^"):
        return [t for t in tensors if fnmatch.fnmatchcase(t.name, pattern)]
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise UserInputError(
            f"--filter {pattern!r} is neither a glob nor a valid regular expression: {error}"
        ) from None
    return [t for t in tensors if regex.search(t.name)]

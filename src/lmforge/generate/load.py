"""Load a model to talk to: a local HF folder, an lmforge training run, a hub id, or a base model plus a LoRA adapter.

One entry point (`load_model`) is shared by generate, chat, eval and serve; what MODEL and `adapter=` name
is resolved by lmforge.hub.locate_model, the resolver every command uses:

- a model folder (config.json + weights), or a hub id org/name[@revision] (downloaded into the HF cache);
- a run folder RUN/ (its RUN/final/, else its newest complete RUN/checkpoints/checkpoint-N);
- an adapter folder (adapter_config.json) alone: its base is read from base_model_name_or_path;
- a base plus `adapter=DIR` (DIR may itself be a run folder holding an adapter);
- a .gguf file (transformers' GGUF loader dequantizes it); a folder saved by `lmforge compress`
  (bitsandbytes / low-rank) loads as transformers or lmforge.compress wrote it.

`quant` quantizes a float model while loading it (bitsandbytes int8 or nf4, torchao int4); a folder saved
by `lmforge compress quantize --method torchao-*` reloads quantized from its safetensors (torchao's
flattened tensors: JSON metadata naming an allow-listed tensor class, nothing unpickled).

Pickle weights (.bin/.pt/.pth) are scanned by lmforge.files.scan before anything unpickles them;
safetensors are preferred whenever they exist. A repo's own Python code runs only with trust_remote_code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import DependencyError, NotFoundError, UserInputError
from lmforge.files.lowrank import is_factorized, load_factorized
from lmforge.files.safe_load import check_model_folder
from lmforge.hub.reference import ModelRef, locate_base, locate_model
from lmforge.runtime import no_hub_kernels

# Config attributes that hold a model's context length, in the order transformers' families use them.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_FALLBACK_CONTEXT_TOKENS = 2048
DTYPES = ("float32", "bfloat16", "float16")
# accelerate's big-model placements (from_pretrained(device_map=...)): layers spread over every visible GPU, then
# CPU memory, then disk, for a model larger than one GPU.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
QUANT_ON_LOAD = ("int8", "int4", "nf4")
# torchao int4 weight-only: int4 values per group of 32 input features with a float scale and zero point (the
# group llama.cpp's q4_0 uses). torchao's Int4WeightOnlyConfig has no CPU kernel in 0.18 (it needs mslk on
# CUDA, or an XPU/NPU), so this is IntxWeightOnlyConfig: stored unpacked in int8, dequantized per matmul.
TORCHAO_INT4_GROUP = 32


@dataclass
class LoadedModel:
    """A causal LM ready for generation (eval mode, on its device) with its tokenizer."""

    model: Any
    tokenizer: Any
    name: str
    context_length: int  # tokens the model accepts (prompt + generated)
    chat_template_source: str  # "tokenizer" (its own template) or "default" (lmforge's chatml fallback)
    chat_template: str  # the Jinja template used to render chats
    device: str
    adapter: str | None = None
    # lmforge.serve: the adapter a shared multi-adapter model switches to for this name (attach_adapter);
    # None on such a model means adapters off (the base itself).
    lora_name: str | None = None

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The exact prompt text the model sees for `messages` (same registry as training)."""
        from lmforge.data.templates import ChatTemplate

        template = ChatTemplate(self.chat_template_source, self.chat_template, self.chat_template_source)
        return template.render(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    @property
    def stop_token_ids(self) -> list[int]:
        """eos plus the chat template's end-of-turn marker when it is a different single token
        (llama-3's <|eot_id|>): a model that ends its turn must stop, not ramble on."""
        from lmforge.data.templates import END_OF_TURN

        ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        for marker in set(END_OF_TURN.values()):
            if marker in self.chat_template:
                encoded = self.tokenizer.encode(marker, add_special_tokens=False)
                if len(encoded) == 1:
                    ids.add(encoded[0])
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(generation_eos, int):
            ids.add(generation_eos)
        elif isinstance(generation_eos, list):
            ids.update(generation_eos)
        return sorted(ids)


def device_and_dtype(device: str | None, dtype: str | None) -> tuple[str, Any]:
    """The device (default: cuda when available) and torch dtype (default: float32 on CPU, bf16 on GPUs that have
    it, else fp16) a model is loaded with."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        # CPU matmuls are fastest and exact in float32; on GPUs bf16 where the card has it (Ampere+).
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    if dtype not in DTYPES:
        raise UserInputError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return device, getattr(torch, dtype)


def context_length_of(config: Any, tokenizer: Any) -> int:
    """The model's context window in tokens: its config, else the tokenizer's, else 2048."""
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    # transformers uses a huge sentinel (1e30) for "no limit recorded".
    if isinstance(limit, int) and 0 < limit < 10**7:
        return limit
    return _FALLBACK_CONTEXT_TOKENS


def check_device_map(device_map: str | None, device: str | None) -> None:
    if device_map is None:
        return
    if device_map not in DEVICE_MAPS:
        raise UserInputError(f"--device-map {device_map!r}: choose one of {', '.join(DEVICE_MAPS)}")
    if device is not None:
        raise UserInputError("--device-map places the model itself; leave out --device")


def input_device(model: Any, fallback: str) -> str:
    """Where a model's inputs go: its embedding layer's device once accelerate has spread it (device_map), where
    offloaded (CPU or disk) layers are moved in by accelerate's hooks; `fallback` for a model on one device."""
    placement = getattr(model, "hf_device_map", None)
    if not placement:
        return fallback
    device = model.get_input_embeddings().weight.device
    return "cpu" if device.type == "meta" else str(device)


def quantization_config(quant: str | None, dtype: Any) -> Any:
    """transformers' config for --quant: bitsandbytes for int8 and nf4 (its CPU backend runs both), torchao
    for int4; None for no quantization."""
    if quant is None:
        return None
    if quant not in QUANT_ON_LOAD:
        raise UserInputError(
            f"--quant {quant!r} is not one of {', '.join(QUANT_ON_LOAD)} (other types: quantize ahead with "
            "`lmforge compress quantize --method gguf-q4_k_m`)"
        )
    if quant == "int4":
        return torchao_config("int4")
    from transformers import BitsAndBytesConfig

    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def torchao_config(bits: str) -> Any:
    """transformers' TorchAoConfig for torchao weight-only int8 (one scale per output row) or int4 (grouped,
    TORCHAO_INT4_GROUP): both run on a CPU and save to safetensors that `from_pretrained` reloads quantized."""
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup
    from transformers import TorchAoConfig

    if bits == "int8":
        return TorchAoConfig(Int8WeightOnlyConfig())
    int4 = torch.int4  # type: ignore[attr-defined]  # a torch dtype since 2.6 (sub-byte dtypes), missing from its stubs
    return TorchAoConfig(IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(TORCHAO_INT4_GROUP)))


def _load_causal_lm(
    folder: Path,
    dtype: Any,
    trust_pickle: bool,
    trust_remote_code: bool,
    *,
    quant: str | None = None,
    device: str = "cpu",
    device_map: str | None = None,
) -> Any:
    from transformers import AutoModelForCausalLM

    no_hub_kernels()
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    source = folder
    if folder.is_file() and folder.suffix == ".gguf":
        source, kwargs["gguf_file"] = folder.parent, folder.name
    else:
        kwargs["use_safetensors"] = check_model_folder(folder, trust_pickle=trust_pickle)
        if is_factorized(folder):
            return load_factorized(folder, dtype)
    if quant is not None:  # bitsandbytes / torchao place their weights while loading, on the device asked for
        kwargs.update(quantization_config=quantization_config(quant, dtype), device_map=device_map or {"": device})
    elif device_map is not None:
        kwargs["device_map"] = device_map
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except ValueError as error:  # a config whose architecture has no causal-LM head
        raise UserInputError(f"{folder} is not a causal language model: {str(error).splitlines()[0]}") from None
    except OSError as error:
        raise NotFoundError(f"cannot load model {folder}: {str(error).splitlines()[0]}") from None
    except ImportError as error:  # a quantized folder whose library is missing (GPTQ: optimum + gptqmodel)
        extra = " (GPTQ: pip install 'lmforge[gptq]')" if "GPTQ" in str(error) else ""
        raise DependencyError(f"cannot load model {folder}: {str(error).splitlines()[0]}{extra}") from None


def load_model(
    model: str,
    *,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
    quant: str | None = None,
    device_map: str | None = None,
) -> LoadedModel:
    """Load `model` (folder, run folder, adapter folder or hub id) and optionally a LoRA `adapter` on top.

    The tokenizer comes from the adapter folder when it ships one (a fine-tune may add tokens or a
    chat template), else from the base. `trust_pickle` loads pickles the scanner cannot prove safe;
    `trust_remote_code` runs a repo's own modeling code; `quant` (int8, nf4, int4) quantizes while loading.
    `device_map` ("auto", ...) lets accelerate place a model larger than one GPU over every GPU, then CPU
    memory, then disk (instead of `device`).
    Raises NotFoundError / UnsafeFileError / UserInputError.
    """
    from lmforge.data.templates import resolve_template

    check_device_map(device_map, device)
    target, dtype_value = device_and_dtype(device, dtype)
    if quant is not None and adapter is not None:
        raise UserInputError(
            "--quant with --adapter would merge the adapter into quantized weights and lose its "
            "update; merge first (lmforge convert BASE OUT --adapter DIR), then load OUT with --quant"
        )
    gguf = Path(model).expanduser()
    if gguf.is_file() and gguf.suffix == ".gguf":  # GGUF holds no pickle: transformers dequantizes it
        ref: ModelRef | None = None
        weights, name = gguf, gguf.name
    else:
        ref = locate_model(model, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
        weights, name = ref.path, ref.name
    adapter_ref = locate_adapter(adapter, trust_pickle) if adapter else None
    if ref is not None and ref.is_adapter:
        if adapter_ref is not None:
            raise UserInputError(f"{model} is itself an adapter; pass its base model as MODEL with --adapter")
        adapter_ref, ref = ref, locate_base(ref, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
        weights, name = ref.path, ref.name

    base = _load_causal_lm(
        weights, dtype_value, trust_pickle, trust_remote_code, quant=quant, device=target, device_map=device_map
    )
    adapter_dir = adapter_ref.path if adapter_ref else None
    tokenizer = _load_tokenizer(adapter_dir, weights, trust_remote_code)
    if adapter_dir is not None:
        from peft import PeftModel

        if len(tokenizer) > base.get_input_embeddings().num_embeddings:
            base.resize_token_embeddings(len(tokenizer))  # the fine-tune added tokens; its adapter expects them
        base = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    # a quantizer placed its own weights (bitsandbytes' model.to refuses), and accelerate a device_map model's
    if getattr(base, "hf_quantizer", None) is None and device_map is None:
        base.to(target)
    base.eval()
    target = input_device(base, target)

    template = resolve_template(tokenizer)
    name = name if adapter_ref is None else f"{name}+{adapter_ref.name}"
    return LoadedModel(
        model=base,
        tokenizer=tokenizer,
        name=name,
        context_length=context_length_of(base.config, tokenizer),
        chat_template_source=template.source,
        chat_template=template.jinja,
        device=target,
        adapter=str(adapter_dir) if adapter_dir else None,
    )


def locate_adapter(adapter: str, trust_pickle: bool = False) -> ModelRef:
    """The LoRA adapter `adapter` names (a folder, a run's final/ or newest checkpoint, or a hub id), scanned."""
    adapter_ref = locate_model(adapter, trust_pickle=trust_pickle)
    if not adapter_ref.is_adapter:
        raise UserInputError(
            f"--adapter {adapter}: {adapter_ref.path} holds no adapter_config.json (not a LoRA adapter)"
        )
    return adapter_ref


def attach_adapter(base: LoadedModel, name: str, adapter: str, *, trust_pickle: bool = False) -> LoadedModel | None:
    """LoRA `adapter` loaded beside any others on `base`'s one copy of the weights, as `name` (peft's
    multi-adapter model): serving N adapters then costs the base once plus N small adapters instead of
    N + 1 merged copies. `base` is switched to that shared model (its own name runs with adapters off).

    None when the adapter's tokenizer adds tokens: its embeddings must be resized, so it cannot share the
    base's and needs its own merged copy (load_model with adapter=...).
    """
    import dataclasses

    from peft import PeftModel

    from lmforge.data.templates import resolve_template

    adapter_dir = locate_adapter(adapter, trust_pickle).path
    own_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = _load_tokenizer(adapter_dir, adapter_dir, False) if own_tokenizer else base.tokenizer
    if len(tokenizer) > base.model.get_input_embeddings().num_embeddings:
        return None
    if isinstance(base.model, PeftModel):
        base.model.load_adapter(str(adapter_dir), adapter_name=name)
    else:
        base.model = PeftModel.from_pretrained(base.model, str(adapter_dir), adapter_name=name)
    if not getattr(base.model, "hf_device_map", None):  # accelerate placed a device_map model's adapters itself
        base.model.to(base.device)
    base.model.eval()
    template = resolve_template(tokenizer)
    return dataclasses.replace(
        base,
        tokenizer=tokenizer,
        name=name,
        context_length=context_length_of(base.model.config, tokenizer),
        chat_template_source=template.source,
        chat_template=template.jinja,
        adapter=str(adapter_dir),
        lora_name=name,
    )


def base_of(model: str, *, adapter: str | None = None) -> str:
    """The model `model` was fine-tuned from, for base-vs-tuned comparisons (`--compare base`).

    With `adapter`, MODEL itself is the base. An adapter folder names its base; a training run records
    it in RUN/config.yaml (init_from, else model.path).
    """
    if adapter is not None:
        return model
    ref = locate_model(model, need="any")
    if ref.is_adapter:
        based = locate_base(ref, need="any")
        return based.name if based.repo_id else based.source
    folder = ref.path
    run = {"final": folder.parent, "checkpoints": folder.parent.parent}.get(
        folder.name if folder.name == "final" else folder.parent.name
    )
    if run is not None and (run / "config.yaml").is_file():
        import yaml

        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        base = config.get("init_from") or (config.get("model") or {}).get("path")
        if base:
            return str(base)
    raise NotFoundError(f"cannot tell which base model {model} was trained from; pass it: --compare BASE_MODEL")


def _load_tokenizer(adapter_dir: Path | None, model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    source = model_dir
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file():
        source = adapter_dir
    elif model_dir.is_file() and model_dir.suffix == ".gguf":  # the tokenizer a GGUF file carries
        source, kwargs["gguf_file"] = model_dir.parent, model_dir.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise NotFoundError(f"no tokenizer in {source}: {str(error).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need padding; eos is the usual stand-in
    tokenizer.padding_side = "left"  # decoder-only batches are left-padded so every row ends at its prompt
    return tokenizer

"""Load a model to talk to: a local HF folder, an lmforge training run, or a base model plus a LoRA adapter.

One entry point (`load_model`) is shared by generate, chat, eval and serve, so every command resolves
a model the same way:

- a model folder (config.json + weights);
- a run folder RUN/ (its RUN/final/, else its newest complete RUN/checkpoints/checkpoint-N);
- an adapter folder (adapter_config.json) alone: its base is read from base_model_name_or_path;
- a base plus `adapter=DIR` (DIR may itself be a run folder holding an adapter).

Pickle weights (.bin/.pt/.pth) are scanned by lmforge.files.scan before anything unpickles them;
safetensors are preferred whenever they exist.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, NotFoundError, UserInputError
from lmforge.files.safe_load import check_model_folder

# The pickle files from_pretrained / PeftModel.from_pretrained unpickle when no safetensors exist. Trainer state
# beside them (training_args.bin, optimizer.pt, rng_state.pth) is never loaded here, so it is not judged here.
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Config attributes that hold a model's context length, in the order transformers' families use them.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_FALLBACK_CONTEXT_TOKENS = 2048
DTYPES = ("float32", "bfloat16", "float16")
# accelerate's big-model placements (from_pretrained(device_map=...)): layers spread over every visible GPU, then
# CPU memory, then disk, for a model larger than one GPU.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


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
        (llama-3's <|eot_id|>): a model that ends its turn must stop, not ramble on (USERS.md training 4)."""
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


def resolve_model_path(source: str | Path) -> Path:
    """The folder holding a model or adapter for `source`: itself, RUN/final, or RUN's newest checkpoint."""
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"model {source} does not exist (give a model folder, a training run folder or an adapter)")
    if not path.is_dir():
        raise UserInputError(f"model {source} is a file; give the folder that holds config.json and the weights")
    if _is_model_folder(path):
        return path
    if _is_model_folder(path / "final"):
        return path / "final"
    checkpoints = _checkpoints(path / "checkpoints")
    if checkpoints:
        return checkpoints[-1]
    raise NotFoundError(
        f"{path} holds no config.json or adapter_config.json, no final/ and no checkpoints/checkpoint-N: not a model"
    )


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (lmforge renames them into place only once written), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name)) and _is_model_folder(p)]
    return [path for _, path in sorted(found)]


def is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def adapter_base(adapter_dir: Path) -> str:
    """The base model an adapter was trained on, from its adapter_config.json."""
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{adapter_dir}/adapter_config.json is unreadable: {error}") from None
    base = config.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path; pass the base as MODEL")
    return str(base)


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


def _load_causal_lm(folder: Path | str, dtype: Any, device_map: str | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if isinstance(folder, Path):
        kwargs["use_safetensors"] = check_model_folder(folder)
    try:
        return AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except ValueError as error:  # a config whose architecture has no causal-LM head
        raise UserInputError(f"{folder} is not a causal language model: {str(error).splitlines()[0]}") from None
    except OSError as error:
        raise NotFoundError(f"cannot load model {folder}: {str(error).splitlines()[0]}") from None


def resolve_base(base: str, adapter_dir: Path) -> Path | str:
    """The base an adapter names: a local folder (as given, or relative to the adapter or its run, since
    training records the path it was given), otherwise a hub id served from the local cache."""
    for candidate in (Path(base).expanduser(), adapter_dir / base, adapter_dir.parent / base):
        if candidate.exists():
            return resolve_model_path(candidate)
    if Path(base).is_absolute() or not looks_like_hub_id(base):
        raise NotFoundError(f"adapter {adapter_dir}: its base model {base} does not exist; pass the base as MODEL "
                            "with --adapter")
    return base


def load_model(model: str, *, adapter: str | None = None, device: str | None = None,
               dtype: str | None = None, device_map: str | None = None) -> LoadedModel:
    """Load `model` (folder, run folder, or adapter folder) and optionally a LoRA `adapter` on top.

    The tokenizer comes from the adapter folder when it ships one (a fine-tune may add tokens or a
    chat template), else from the base. `device_map` ("auto", ...) lets accelerate place a model larger than
    one GPU over every GPU, then CPU memory, then disk (instead of `device`).
    Raises NotFoundError / UnsafeFileError / UserInputError.
    """
    from lmforge.data.templates import resolve_template

    check_device_map(device_map, device)
    target, dtype_value = device_and_dtype(device, dtype)
    path = Path(model).expanduser()
    model_ref: Path | str = resolve_model_path(path) if path.exists() or not looks_like_hub_id(model) else model
    adapter_dir: Path | None = adapter_folder(adapter) if adapter else None
    if isinstance(model_ref, Path) and is_adapter(model_ref):
        if adapter_dir is not None:
            raise UserInputError(f"{model} is itself an adapter; pass its base model as MODEL with --adapter")
        adapter_dir, model_ref = model_ref, resolve_base(adapter_base(model_ref), model_ref)

    base = _load_causal_lm(model_ref, dtype_value, device_map)
    tokenizer = _load_tokenizer(adapter_dir, model_ref)
    if adapter_dir is not None:
        from peft import PeftModel

        check_model_folder(adapter_dir)
        if len(tokenizer) > base.get_input_embeddings().num_embeddings:
            base.resize_token_embeddings(len(tokenizer))  # the fine-tune added tokens; its adapter expects them
        base = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    if device_map is None:
        base.to(target)
    base.eval()
    target = input_device(base, target)

    template = resolve_template(tokenizer)
    name = display_name(model_ref, adapter_dir)
    return LoadedModel(
        model=base, tokenizer=tokenizer, name=name, context_length=context_length_of(base.config, tokenizer),
        chat_template_source=template.source, chat_template=template.jinja, device=target,
        adapter=str(adapter_dir) if adapter_dir else None,
    )


def adapter_folder(adapter: str) -> Path:
    """The folder holding the LoRA adapter `adapter` names (itself, a run's final/ or newest checkpoint)."""
    adapter_dir = resolve_model_path(adapter)
    if not is_adapter(adapter_dir):
        raise UserInputError(f"--adapter {adapter}: {adapter_dir} holds no adapter_config.json (not a LoRA adapter)")
    return adapter_dir


def attach_adapter(base: LoadedModel, name: str, adapter: str) -> LoadedModel | None:
    """LoRA `adapter` loaded beside any others on `base`'s one copy of the weights, as `name` (peft's
    multi-adapter model): serving N adapters then costs the base once plus N small adapters instead of
    N + 1 merged copies. `base` is switched to that shared model (its own name runs with adapters off).

    None when the adapter's tokenizer adds tokens: its embeddings must be resized, so it cannot share the
    base's and needs its own merged copy (load_model with adapter=...).
    """
    import dataclasses

    from peft import PeftModel

    from lmforge.data.templates import resolve_template

    adapter_dir = adapter_folder(adapter)
    check_model_folder(adapter_dir)
    own_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = _load_tokenizer(adapter_dir, adapter_dir) if own_tokenizer else base.tokenizer
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
        base, tokenizer=tokenizer, name=name, context_length=context_length_of(base.model.config, tokenizer),
        chat_template_source=template.source, chat_template=template.jinja, adapter=str(adapter_dir), lora_name=name)


def base_of(model: str, *, adapter: str | None = None) -> str:
    """The model `model` was fine-tuned from, for base-vs-tuned comparisons (`--compare base`).

    With `adapter`, MODEL itself is the base. An adapter folder names its base; a training run records
    it in RUN/config.yaml (init_from, else model.path).
    """
    if adapter is not None:
        return model
    folder = resolve_model_path(model)
    if is_adapter(folder):
        return str(resolve_base(adapter_base(folder), folder))
    run = {"final": folder.parent, "checkpoints": folder.parent.parent}.get(
        folder.name if folder.name == "final" else folder.parent.name)
    if run is not None and (run / "config.yaml").is_file():
        import yaml

        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        base = config.get("init_from") or (config.get("model") or {}).get("path")
        if base:
            return str(base)
    raise NotFoundError(f"cannot tell which base model {model} was trained from; pass it: --compare BASE_MODEL")


def looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", text))


def _load_tokenizer(adapter_dir: Path | None, model_ref: Path | str) -> Any:
    from transformers import AutoTokenizer

    source: Path | str = model_ref
    if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file():
        source = adapter_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise NotFoundError(f"no tokenizer in {source}: {str(error).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need padding; eos is the usual stand-in
    tokenizer.padding_side = "left"  # decoder-only batches are left-padded so every row ends at its prompt
    return tokenizer


def display_name(model_ref: Path | str, adapter_dir: Path | None) -> str:
    base = _folder_name(model_ref) if isinstance(model_ref, Path) else model_ref
    return base if adapter_dir is None else f"{base}+{_folder_name(adapter_dir)}"


def _folder_name(path: Path) -> str:
    """A run's final/ is named after its run, a checkpoint as run/checkpoint-N."""
    if path.name == "final":
        return path.parent.name
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return path.name

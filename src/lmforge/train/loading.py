"""Where a run's starting weights and tokenizer come from.

A model is a pretrained folder, a hub id (org/name[@revision], downloaded into the HF cache), a finished
lmforge run (its final/, an adapter merged into its base), a checkpoint folder, or a config for training
from scratch; lmforge.hub.locate_model resolves all but the last, as for every other command.
`init_from` starts a new run from a finished one; `--resume` (run.py) continues an interrupted one instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

from lmforge.errors import ConfigError, NotFoundError
from lmforge.files.safe_load import check_model_folder
from lmforge.hub.reference import ModelRef, adapter_base, locate_base, locate_model
from lmforge.runtime import no_hub_kernels
from lmforge.train.config import TrainConfig
from lmforge.train.context import resolved_precision
from lmforge.train.loss import apply_loss
from lmforge.train.methods import Task, quantization_config

HEADS: dict[Task, str] = {
    "causal": "AutoModelForCausalLM",
    "classify": "AutoModelForSequenceClassification",
    "mlm": "AutoModelForMaskedLM",
}


def resolve_model_folder(source: str, *, trust_pickle: bool = False, trust_remote_code: bool = False) -> Path:
    """The local folder of a model folder, run folder (its final/), checkpoint folder, adapter or hub id
    (lmforge.hub.locate_model: downloaded if needed, pickles scanned).

    An adapter folder must be one load_pretrained can merge: run.py checks every source through here
    before it touches the run folder.
    """
    ref = locate_model(source, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    if ref.is_adapter:
        _check_mergeable(source, ref.path)
    return ref.path


def _check_mergeable(source: str, folder: Path) -> None:
    """Prompt/prefix tuning learns virtual tokens fed beside the input, not a weight delta: peft has no
    merge for them, so such a run cannot become another run's starting weights."""
    from peft import PeftConfig

    base_ref = adapter_base(folder)
    adapter_config = PeftConfig.from_pretrained(str(folder))
    if adapter_config.is_prompt_learning:
        kind = adapter_config.peft_type.value.lower().replace("_", "-")
        raise ConfigError(
            f"{source} holds a {kind} adapter, which cannot be merged into weights to start a run; "
            f"start from its base {base_ref}, or train that run with method lora"
        )


BPE_PREFIX = "bpe:"


def _train_tokenizer(config: TrainConfig, spec: str, run_dir: Path, main: bool) -> Any:
    """`model.tokenizer: bpe:N`: a byte-level BPE of N tokens trained on the run's training text, saved
    in RUN/tokenizer (and reused from there on --resume) so a from-scratch run needs no download."""
    from transformers import AutoTokenizer

    from lmforge.data.tokenizer import train_bpe_tokenizer
    from lmforge.fileio import atomic_directory
    from lmforge.train.context import load_texts

    folder = run_dir / "tokenizer"
    if folder.is_dir():
        return AutoTokenizer.from_pretrained(folder)
    tokenizer = train_bpe_tokenizer(load_texts(config), vocab_size=int(spec[len(BPE_PREFIX) :]))
    if main:
        with atomic_directory(folder) as temporary:
            tokenizer.save_pretrained(str(temporary))
    return tokenizer


def load_training_tokenizer(config: TrainConfig, run_dir: Path | None = None, main: bool = True) -> Any:
    """The run's tokenizer: model.tokenizer, else the model folder's; `bpe:N` trains one (needs run_dir)."""
    from lmforge.data.stats import load_tokenizer

    if config.model.tokenizer and config.model.tokenizer.startswith(BPE_PREFIX):
        if run_dir is None:
            raise ConfigError("model.tokenizer bpe:N is trained inside a run; use lmforge train")
        return _train_tokenizer(config, config.model.tokenizer, run_dir, main)
    source = config.model.tokenizer or config.init_from or config.model.path
    assert source is not None  # the config validator guarantees a model source
    folder = resolve_model_folder(source, **trusted(config)) if config.model.tokenizer is None else Path(source)
    if not folder.is_dir():
        raise NotFoundError(f"model.tokenizer: folder {folder} does not exist")
    tokenizer = load_tokenizer(folder, setting="model.tokenizer", trust_remote_code=config.model.trust_remote_code)
    if tokenizer.pad_token is None:
        # Batches need padding; eos is the conventional stand-in and is masked out of the loss.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def _quantized_device() -> int | str:
    """Where bitsandbytes puts the quantized weights, which it does while loading: this process's own GPU
    (LOCAL_RANK under accelerate or torchrun; loading every rank onto GPU 0 runs it out of memory), else the
    CPU. Only tests reach the CPU (bitsandbytes' CPU backend): qlora on a CPU stops before loading."""
    import torch

    return int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.is_available() else "cpu"


class Trust(TypedDict):
    """Keyword arguments of every model loader: the loading gates' overrides."""

    trust_pickle: bool
    trust_remote_code: bool


def trusted(config: TrainConfig) -> Trust:
    """The config's explicit overrides of the loading gates (model.trust_pickle, model.trust_remote_code)."""
    return Trust(trust_pickle=config.model.trust_pickle, trust_remote_code=config.model.trust_remote_code)


def load_pretrained(
    source: str,
    task: Task,
    *,
    dtype: str = "float32",
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    quantization: Any = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Any:
    """The model in `source` with `task`'s head; an lmforge adapter folder is merged into its base."""
    no_hub_kernels()
    import transformers

    folder = resolve_model_folder(source, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    auto = getattr(transformers, HEADS[task])
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": _quantized_device()}
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        from peft import PeftConfig, PeftModel

        base_folder = locate_base(
            ModelRef(source, "adapter", folder), trust_pickle=trust_pickle, trust_remote_code=trust_remote_code
        ).path
        use_safetensors = check_model_folder(base_folder, trust_pickle=trust_pickle)
        base = auto.from_pretrained(base_folder, use_safetensors=use_safetensors, **kwargs)
        # The adapter may come from another head's run (an SFT causal-LM LoRA under a reward model):
        # its LoRA weights live in the shared body, so load it task-free and merge.
        adapter_config = PeftConfig.from_pretrained(str(folder))
        adapter_config.task_type = None
        merged = PeftModel.from_pretrained(base, folder, config=adapter_config).merge_and_unload()
        for parameter in merged.parameters():  # peft loads for inference (frozen); methods.py decides
            parameter.requires_grad_(True)
        return merged
    return auto.from_pretrained(folder, use_safetensors=check_model_folder(folder, trust_pickle=trust_pickle), **kwargs)


# Methods whose base weights stay frozen: they load in the half precision that training computes in.
FROZEN_BASE_METHODS = ("lora", "qlora", "prompt", "prefix")


def weights_dtype(config: TrainConfig) -> str:
    """model.dtype, or when empty what the recipes of peft, LLaMA-Factory and axolotl load: a frozen base
    (adapter methods) in the bf16/fp16 that mixed precision computes in, and fp32 weights for full and
    freeze tuning, which torch AMP trains directly (fp32 master weights, half-precision compute)."""
    if config.model.dtype is not None:
        return config.model.dtype
    precision = resolved_precision(config.train.precision)
    if config.method.name in FROZEN_BASE_METHODS and precision in ("bf16", "fp16"):
        return {"bf16": "bfloat16", "fp16": "float16"}[precision]
    return "float32"


def load_training_model(
    config: TrainConfig,
    task: Task,
    tokenizer: Any,
    *,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
) -> Any:
    """The starting model of a run: init_from, model.path, or model.config from scratch (seeded), computing
    train.loss (train/loss.py) when it is a causal LM."""
    model = _starting_model(config, task, tokenizer, num_labels=num_labels, label_names=label_names)
    return apply_loss(model, config.train.loss) if task == "causal" else model


def _starting_model(
    config: TrainConfig, task: Task, tokenizer: Any, *, num_labels: int | None, label_names: list[str] | None
) -> Any:
    import torch
    import transformers

    dtype = weights_dtype(config)
    source = config.init_from or config.model.path
    if source is not None:
        return load_pretrained(
            source,
            task,
            dtype=dtype,
            num_labels=num_labels,
            label_names=label_names,
            quantization=quantization_config(config.method),
            **trusted(config),
        )
    raw = dict(config.model.config or {})
    model_type = raw.pop("model_type")
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **raw)
    except ValueError as error:
        raise ConfigError(f"model.config.model_type: {error}") from None
    hf_config.vocab_size = len(tokenizer)
    hf_config.pad_token_id = tokenizer.pad_token_id
    hf_config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is None:
        hf_config.bos_token_id = None
    if num_labels is not None:
        hf_config.num_labels = num_labels
    torch.manual_seed(config.train.seed)
    model = getattr(transformers, HEADS[task]).from_config(hf_config)
    return model.to(_dtype(dtype)) if dtype != "auto" else model

"""Which parameters train: full, freeze (last N layers + head), LoRA/QLoRA, prompt/prefix tuning.

Every method except freeze is a peft config; freeze is `requires_grad` on the last layers and the
head (the transfer-learning habit: lower layers are general, the top ones task-specific, Yosinski et al.
2014, "How transferable are features in deep neural networks?").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lmforge.errors import ConfigError
from lmforge.train.config import MethodSection

Task = Literal["causal", "classify", "mlm"]


@dataclass(frozen=True)
class ParamCount:
    trainable_params: int
    total_params: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable_params / max(self.total_params, 1)

    def __str__(self) -> str:
        return f"trainable {self.trainable_params:,} / total {self.total_params:,} params ({self.percent:.3f}%)"


def lora_targets(model_config: dict[str, Any], method: MethodSection) -> list[str] | str:
    """The modules LoRA wraps: the user's list, else the planner's default for the architecture (every linear
    projection of attention and MLP, experts included, never the router or the head: the QLoRA paper's finding,
    Dettmers et al. 2023 §4), so `lmforge plan` counts exactly what trains. An architecture the planner does not
    model gets peft's all-linear."""
    if method.target_modules:
        return method.target_modules
    from lmforge.plan.families import EXACT_MODEL_TYPES
    from lmforge.plan.models import spec_from_config
    from lmforge.plan.params import default_lora_targets

    if model_config.get("model_type") not in EXACT_MODEL_TYPES:
        return "all-linear"
    return default_lora_targets(spec_from_config(model_config, name=str(model_config.get("_name_or_path") or "model")))


def quantization_config(method: MethodSection) -> Any | None:
    """bitsandbytes settings for qlora: NF4 with double quantization and bf16 compute, or 8-bit."""
    if method.name != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if method.quant_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _layer_stack(model: Any) -> tuple[Any, Any]:
    """The longest ModuleList of transformer blocks (model.layers, transformer.h, encoder.layer...)
    and the module that holds it."""
    import torch

    found = [
        (module, child)
        for module in model.modules()
        for child in module.children()
        if isinstance(child, torch.nn.ModuleList) and len(child) > 0
    ]
    if not found:
        raise ConfigError("method freeze: this model has no list of layers to unfreeze; use lora or full")
    return max(found, key=lambda pair: len(pair[1]))


def _output_modules(model: Any, parent: Any, layers: Any, task: Task) -> list[Any]:
    """What runs after the last block: the final norm, an untied LM head, a classifier head.

    A tied head is the input embedding matrix, so it stays frozen (as lmforge.plan counts it).
    """
    children = list(parent.children())
    modules = children[children.index(layers) + 1 :]
    output = model.get_output_embeddings() if task != "classify" else None
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        modules.append(output)
    if task == "mlm" and hasattr(model, "cls"):
        modules.append(model.cls)
    for name in ("score", "classifier"):
        if getattr(model, name, None) is not None:
            modules.append(getattr(model, name))
    return modules


def _freeze(model: Any, method: MethodSection, task: Task) -> Any:
    parent, layers = _layer_stack(model)
    if not 1 <= method.trainable_layers <= len(layers):
        raise ConfigError(f"method.trainable_layers: {method.trainable_layers} but the model has {len(layers)} layers")
    for parameter in model.parameters():
        parameter.requires_grad = False
    keep = list(layers)[len(layers) - method.trainable_layers :] + _output_modules(model, parent, layers, task)
    for module in keep:
        for parameter in module.parameters():
            parameter.requires_grad = True
    return model


def peft_task_type(task: Task) -> str:
    return {"causal": "CAUSAL_LM", "classify": "SEQ_CLS", "mlm": "FEATURE_EXTRACTION"}[task]


def apply_method(model: Any, method: MethodSection, task: Task, *, gradient_checkpointing: bool = False) -> Any:
    """Returns `model` with only the chosen parameters trainable (a peft model for adapter methods)."""
    if method.name == "full":
        return model
    if method.name == "freeze":
        return _freeze(model, method, task)

    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    task_type = peft_task_type(task)
    if method.name in ("lora", "qlora"):
        if method.name == "qlora":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        peft_config: Any = LoraConfig(
            task_type=task_type,
            r=method.lora_r,
            lora_alpha=method.lora_alpha,
            lora_dropout=method.lora_dropout,
            target_modules=lora_targets(model.config.to_dict(), method),
            bias="none",
        )
    elif method.name == "prompt":
        peft_config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=method.num_virtual_tokens)
    else:
        peft_config = PrefixTuningConfig(task_type=task_type, num_virtual_tokens=method.num_virtual_tokens)
    try:
        return get_peft_model(model, peft_config)
    except ValueError as error:
        # peft adapts fused MoE expert tensors (transformers 5) through lora.ParamWrapper, which has no dropout.
        if "ParamWrapper does not work with lora_dropout" not in str(error):
            raise
        raise ConfigError(
            f"method.lora_dropout: LoRA on this model's MoE experts (3-D parameters) works only without dropout "
            f"in peft; set method.lora_dropout=0, or method.target_modules without the experts (got "
            f"{method.lora_dropout})"
        ) from None


def count_model_params(model: Any) -> ParamCount:
    """Trainable and total parameters as the optimizer sees them (peft's own count for adapters)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return ParamCount(int(trainable), int(total))
    parameters = list(model.parameters())
    return ParamCount(sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters))

"""The one YAML config a training run is built from, validated before any model loads.

Every key has its default and its meaning here (litgpt/torchtune style: facts in one declarative
place). `load_config` reports every problem at once as a ConfigError naming the key and the
allowed values; `print_config(stage)` renders these defaults as a commented YAML file.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from lmforge.data.builtin import TASKS, get_builtin
from lmforge.errors import ConfigError, LmforgeError, join_problems
from lmforge.plan.setup import METHODS, Method, TrainingSetup

Stage = Literal["pretrain", "sft", "rm", "dpo", "kto", "orpo", "rlhf", "distill", "classify", "mlm"]
STAGES: tuple[str, ...] = typing.get_args(Stage)
# The method knobs' defaults, shared with the planner (lmforge plan). TrainingSetup types method and quant_bits
# as str and int and checks their values at run time, hence the casts below.
_PLANNED = TrainingSetup()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    path: str | None = Field(
        None,
        description="pretrained model folder, hub id org/name[@revision], or a finished "
        "run folder (its final/ is used)",
    )
    config: dict[str, Any] | None = Field(
        None, description="from scratch: HF config keys with model_type, e.g. {model_type: llama, hidden_size: 64}"
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer folder (defaults to the model folder), or bpe:N to train an N-token BPE on data.train",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        None,
        description="weights dtype on load; empty: float32 for full/freeze (mixed precision keeps fp32 "
        "weights), the bf16/fp16 of train.precision for the frozen base of lora/qlora/prompt/prefix",
    )
    trust_pickle: bool = Field(
        False,
        description="load pickle weights the scanner cannot prove safe (runs code!); "
        "applies to every model the run loads (reward model, teacher too)",
    )
    trust_remote_code: bool = Field(False, description="run the Python code a hub model ships (read it first)")


class DataSection(_Section):
    train: str = Field("builtin:arith-sft", description="a file/glob/folder/hub name or builtin:NAME for lmforge.data")
    eval: str | None = Field(None, description="validation source; if empty, eval_fraction of train is held out")
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of train held out for validation")
    kind: Literal["text", "chat", "preference", "unpaired_preference", "classification"] | None = Field(
        None, description="dataset kind; detected from the columns when empty"
    )
    columns: dict[str, str] | None = Field(None, description="column mapping {canonical: yours}, e.g. {text: body}")
    on_error: Literal["fail", "skip"] = Field(
        "fail",
        description="bad records: fail lists them and stops; skip drops them (counted as rejected in "
        "RUN/data/summary.json)",
    )
    tasks: list[str] | None = Field(
        None,
        description=f"builtin: arith sets and corpus only: train on these tasks ({', '.join(TASKS)}); all when empty",
    )
    max_examples: int | None = Field(None, ge=1, description="use only the first N training examples")
    max_len: int = Field(512, ge=8, description="tokens per example (pretrain: block size)")
    template: str | None = Field(None, description="chat template name; the tokenizer's own when empty")
    train_on_prompt: bool = Field(False, description="also train on prompt tokens (sft)")
    packing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="pretrain/sft: several examples per row of max_len tokens, each attending only to "
        "itself; auto packs where the architecture keeps packed examples apart, off pads dynamically",
    )


class MethodSection(_Section):
    name: Method = Field(cast(Method, _PLANNED.method), description=" | ".join(METHODS))
    trainable_layers: int = Field(
        _PLANNED.trainable_layers, ge=1, description="freeze: how many last layers (plus the head) train"
    )
    lora_r: int = Field(_PLANNED.lora_r, ge=1, description="lora/qlora rank")
    lora_alpha: int = Field(_PLANNED.lora_alpha, ge=1, description="lora/qlora scaling alpha")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="lora/qlora dropout")
    target_modules: list[str] | None = Field(None, description="lora targets; per-architecture default when empty")
    quant_bits: Literal[4, 8] = Field(
        cast(Literal[4, 8], _PLANNED.quant_bits), description="qlora: 4 (NF4, double quantization) or 8 bits"
    )
    num_virtual_tokens: int = Field(
        _PLANNED.num_virtual_tokens, ge=1, description="prompt/prefix tuning: virtual tokens"
    )


class EarlyStopping(_Section):
    patience: int | None = Field(
        None, ge=1, description="evaluations without improvement before stopping; off if empty"
    )
    metric: str = Field("eval_loss", description="metric that picks the best checkpoint and drives early stopping")
    mode: Literal["min", "max"] = Field("min", description="min for losses, max for accuracies")


class TrainSection(_Section):
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs when set")
    epochs: float = Field(1.0, gt=0, description="passes over the training data")
    micro_batch_size: int = Field(4, ge=1, description="examples per device per forward pass")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="schedule after warmup"
    )
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm (0 = off)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations to save memory")
    length_grouped: bool = Field(
        False,
        description="batch examples of similar length (transformers' "
        "LengthGroupedSampler): less padding without packing",
    )
    loss: Literal["standard", "chunked", "fused"] = Field(
        "standard",
        description="sft/pretrain: standard (whole fp32 logits) | chunked (trl's chunked head, never the "
        "whole logits) | fused (Liger, CUDA + liger-kernel)",
    )
    offload_activations: bool = Field(
        False,
        description="keep the activations saved for backward in CPU RAM, copied back as backward needs them "
        "(TRL's OffloadActivations, torchtune's recipe); CUDA only",
    )
    seed: int = Field(42, description="seeds weights init, data order, dropout")
    eval_every: int | None = Field(None, ge=1, description="evaluate every N steps; off if empty")
    save_every: int | None = Field(None, ge=1, description="checkpoint every N steps; off if empty")
    keep_last: int = Field(2, ge=1, description="complete checkpoints kept (the best one is also kept)")
    log_every: int = Field(1, ge=1, description="log loss/lr every N steps")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list, description="extra trackers")
    auto_fit: bool = Field(False, description="ask the planner for micro-batch, grad_accum, recompute for target_gpu")
    target_gpu: str | None = Field(None, description="auto_fit: catalog GPU name, e.g. A100-80GB")
    global_batch_size: int | None = Field(None, ge=1, description="auto_fit: examples per optimizer step wanted")
    nan_guard: bool = Field(True, description="stop with a clear error when the loss becomes NaN/inf")


class DpoSection(_Section):
    beta: float = Field(0.1, gt=0, description="dpo/kto: pull towards the reference model; orpo: odds-ratio weight")
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="dpo: add this weight x NLL of the chosen answer (RPO, Pang "
        "et al. 2024); keeps DPO from lowering the chosen answer's likelihood",
    )


class RlhfSection(_Section):
    reward_model: str | None = Field(None, description="trained reward model folder (an rm run or its final/)")
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="trl online RL trainer (trl 1.16 ships no PPO)")
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt")
    max_new_tokens: int = Field(32, ge=1, description="completion length")
    beta: float = Field(0.04, ge=0, description="KL penalty towards the reference model")


class DistillSection(_Section):
    teacher: str | None = Field(None, description="teacher model folder (same tokenizer as the student)")
    temperature: float = Field(2.0, gt=0, description="softens both distributions in the KL term")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL term; 1-alpha weights cross-entropy")


class MlmSection(_Section):
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="share of tokens masked")


class TrainConfig(_Section):
    stage: Stage = Field("sft", description=" | ".join(STAGES))
    out: str = Field("runs/run", description="run folder (config, plan, metrics, plots, checkpoints, final/)")
    init_from: str | None = Field(
        None, description="start a NEW run from a finished run's weights (not its optimizer); --resume continues one"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    method: MethodSection = Field(default_factory=MethodSection)
    train: TrainSection = Field(default_factory=TrainSection)
    dpo: DpoSection = Field(default_factory=DpoSection)
    rlhf: RlhfSection = Field(default_factory=RlhfSection)
    distill: DistillSection = Field(default_factory=DistillSection)
    mlm: MlmSection = Field(default_factory=MlmSection)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        problems: list[str] = []
        sources = [name for name in ("path", "config") if getattr(self.model, name) is not None]
        if self.init_from is None and len(sources) != 1:
            problems.append("model: set exactly one of model.path (pretrained) or model.config (from scratch)")
        if self.model.config is not None and "model_type" not in self.model.config:
            problems.append("model.config: needs model_type (e.g. llama, bert)")
        if self.model.config is not None and self.model.tokenizer is None:
            problems.append("model.tokenizer: a from-scratch model needs a tokenizer folder or bpe:N")
        bpe = self.model.tokenizer or ""
        if bpe.startswith("bpe:") and (not bpe[4:].isdigit() or int(bpe[4:]) < 300 or self.model.config is None):
            problems.append(f"model.tokenizer: {bpe} must be bpe:N with N >= 300, for a from-scratch model.config")
        if self.model.config is not None and self.init_from is None and self.method.name not in ("full", "freeze"):
            problems.append(f"method.name: {self.method.name} adapts a pretrained model; from scratch use full")
        if self.stage == "rlhf" and not self.rlhf.reward_model:
            problems.append("rlhf.reward_model: the rlhf stage needs a trained reward model folder")
        if self.stage == "distill" and not self.distill.teacher:
            problems.append("distill.teacher: the distill stage needs a teacher model folder")
        if self.train.auto_fit and not self.train.target_gpu:
            problems.append("train.target_gpu: auto_fit needs a target GPU name")
        if self.train.early_stopping.patience and not self.train.eval_every:
            problems.append("train.eval_every: early_stopping needs evaluation every N steps")
        if self.train.loss != "standard" and self.stage not in ("sft", "pretrain"):
            problems.append(
                f"train.loss: {self.train.loss} replaces the causal-LM loss of stages sft and pretrain; "
                f"stage {self.stage} computes its own loss"
            )
        if self.method.name in ("prompt", "prefix") and self.stage not in ("sft", "pretrain", "classify"):
            problems.append(f"method.name: {self.method.name} tuning works with stages sft, pretrain, classify")
        if self.data.tasks is not None:
            problems += _task_problems(self.data)
        if problems:
            raise ValueError(join_problems(problems))
        return self


def _task_problems(data: DataSection) -> list[str]:
    """data.tasks narrows a built-in set (lmforge.data.builtin.load_builtin's `tasks`): every builtin source of
    the run (train, and eval when it is one) must be a set drawn from the tasks, and every name a task."""
    problems = []
    unknown = [task for task in data.tasks or [] if task not in TASKS]
    if unknown or not data.tasks:
        problems.append(
            f"data.tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(TASKS)}"
        )
    if not data.train.startswith("builtin:"):
        problems.append(f"data.tasks: applies only to a builtin: source, but data.train is {data.train}")
    for key, source in (("train", data.train), ("eval", data.eval)):
        if source is None or not source.startswith("builtin:"):
            continue
        try:
            has_tasks = get_builtin(source).has_tasks
        except LmforgeError as error:
            problems.append(f"data.{key}: {error}")
            continue
        if not has_tasks:
            problems.append(f"data.tasks: {source} is not drawn from the built-in tasks; remove data.tasks")
    return problems


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[leaf] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`a.b=c` strings into (key, YAML-parsed value) pairs, so `--set train.max_steps=5` gives an int."""
    import yaml

    pairs = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.max_steps=100")
        pairs.append((key.strip(), yaml.safe_load(text) if text.strip() else None))
    return pairs


def _section_type(model: type[BaseModel], name: str) -> type[BaseModel]:
    """The model class of one of `model`'s sections (every nested config section is a pydantic model)."""
    annotation = model.model_fields[name].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel), name
    return annotation


def _explain(error: ErrorDetails) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] = TrainConfig
        for part in error["loc"][:-1]:
            section = _section_type(section, str(part))
        allowed = ", ".join(section.model_fields)
        return f"{location}: unknown key (allowed: {allowed})"
    if error["type"] == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{location or 'config'}: {error['msg']} (got {error.get('input')!r})"


def _without(raw: dict[str, Any], locations: list[tuple[Any, ...]]) -> dict[str, Any]:
    pruned = copy.deepcopy(raw)
    for location in locations:
        if not location:
            continue
        node: Any = pruned
        for part in location[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(location[-1], None)
    return pruned


def validate_config(raw: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a plain dict, or one ConfigError listing every problem.

    Cross-key checks (a stage without its model, auto_fit without a GPU) run only on valid values, so
    the bad keys are dropped and validation repeated once to report those problems in the same error.
    """
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        problems = [_explain(e) for e in error.errors()]
        # A problem without a location is the cross-key validator's: it ran, so a second pass would repeat it.
        if all(e["loc"] for e in error.errors()):
            try:
                TrainConfig.model_validate(_without(raw, [tuple(e["loc"]) for e in error.errors()]))
            except ValidationError as second:
                problems += [_explain(e) for e in second.errors() if e["type"] == "value_error"]
        raise ConfigError("invalid config: " + join_problems(problems)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Reads a YAML config, applies `--set key=value` overrides, validates everything at once."""
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{file}: not valid YAML ({str(error).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of keys")
        raw = copy.deepcopy(loaded or {})
    for key, value in parse_overrides(overrides or []):
        _set_dotted(raw, key, value)
    return validate_config(raw)


def config_to_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


_STAGE_SECTIONS = {"dpo": ("dpo", "kto", "orpo"), "rlhf": ("rlhf",), "distill": ("distill",), "mlm": ("mlm",)}
_STAGE_EXAMPLE: dict[str, dict[str, Any]] = {
    "pretrain": {
        "data": {"train": "builtin:corpus"},
        "model": {
            "path": None,
            "tokenizer": "TOKENIZER_FOLDER",
            "config": {
                "model_type": "llama",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
            },
        },
    },
    "sft": {"data": {"train": "builtin:arith-sft"}, "method": {"name": "lora"}},
    "rm": {"data": {"train": "builtin:arith-pref"}},
    "dpo": {"data": {"train": "builtin:arith-pref"}, "method": {"name": "lora"}},
    "kto": {"data": {"train": "builtin:arith-kto"}, "method": {"name": "lora"}},
    "orpo": {"data": {"train": "builtin:arith-pref"}, "method": {"name": "lora"}},
    "rlhf": {"data": {"train": "builtin:arith-pref"}, "rlhf": {"reward_model": "runs/rm"}},
    "distill": {"data": {"train": "builtin:arith-sft"}, "distill": {"teacher": "TEACHER_FOLDER"}},
    "classify": {"data": {"train": "builtin:sentiment"}},
    "mlm": {"data": {"train": "builtin:corpus"}},
}


def _render_section(lines: list[str], model: BaseModel, indent: int) -> None:
    import yaml

    pad = "  " * indent
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _render_section(lines, value, indent + 1)
            continue
        dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
        comment = f"  # {field.description}" if field.description else ""
        lines.append(f"{pad}{name}: {dumped}{comment}")


def print_config(stage: str) -> str:
    """A commented default config for `stage`: every key, its default and what it means."""
    if stage not in STAGES:
        raise ConfigError(f"--print-config {stage!r}: unknown stage (allowed: {', '.join(STAGES)})")
    example = copy.deepcopy(_STAGE_EXAMPLE[stage])
    example.setdefault("model", {}).setdefault("path", "MODEL_FOLDER")
    lines = [
        f"# lmforge train config for stage {stage}; run: lmforge train THIS.yaml",
        f"stage: {stage}",
        f"out: runs/{stage}  # run folder (config, plan, metrics, plots, checkpoints, final/)",
        "init_from: null  # start a NEW run from a finished run's weights; --resume continues this one",
    ]
    shown = {"model", "data", "method", "train"} | {s for s, stages in _STAGE_SECTIONS.items() if stage in stages}
    for name in ("model", "data", "method", "train", "dpo", "rlhf", "distill", "mlm"):
        if name not in shown:
            continue
        section = _section_type(TrainConfig, name).model_validate(example.get(name, {}))
        lines.append(f"{name}:")
        _render_section(lines, section, 1)
    return "\n".join(lines) + "\n"

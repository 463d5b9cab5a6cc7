"""Measure, instead of estimate: one real training step of the actual transformers model on fake tensors.

`simulate_training(spec, setup) -> SimulationResult` builds the Hugging Face architecture from the
spec's config inside torch's FakeTensorMode (tensors carry shape and dtype but no storage: no
weights, no GPU, seconds of CPU), runs one forward + backward + optimizer step exactly as a
Trainer would (AMP autocast for "-mixed" precisions, peft LoRA, HF activation checkpointing, SDPA
or eager attention), and reports the peak of live tensor bytes measured by
torch.distributed._tools.mem_tracker.MemTracker, in the same categories as the analytic model.

Optimizer states are initialised before the measured step, so the peak is the steady-state one
(from step 2 on), not the smaller first step. Three moments are measured separately: the
forward-backward peak, the end of backward (inside the first block's or the embedding's backward)
and the optimizer step. A deep model is simulated with 2 and 3 layers and each moment is
extrapolated linearly to all layers (each layer adds the same bytes; a test checks the result
against a full simulation byte for byte). The CUDA context and allocator fragmentation are
invisible here: compare with the analytic total minus its "overhead" category.

API used by the CLI (`lmforge plan MODEL --simulate`):
    simulate_training(spec: ModelSpec, setup: TrainingSetup, *, extrapolate_above_layers: int = 3)
        -> SimulationResult  (.memory: MemoryBreakdown, .peak_bytes, .peak_phase, .to_dict())
Raises UserInputError for what it cannot run: non-decoder models, methods other than full/lora,
8-bit optimizers, selective recomputation, architectures transformers cannot build that way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmforge.errors import DependencyError, UserInputError
from lmforge.plan.setup import CATEGORIES, MemoryBreakdown, TrainingSetup
from lmforge.plan.spec import ModelSpec

if TYPE_CHECKING:
    from torch import Tensor
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.optim import Optimizer
    from transformers import PretrainedConfig

SIMULATED_METHODS = ("full", "lora")
SIMULATED_OPTIMIZERS = ("adamw", "sgd", "adafactor")


@dataclass
class SimulationResult:
    """Measured peak bytes of one training step (one GPU, no parallelism), by category."""

    memory: MemoryBreakdown
    simulated_layers: tuple[int, ...]  # layer counts actually run; (2, 3) means extrapolated
    num_layers: int  # the model's real layer count the figures are for
    peak_phase: str  # "forward-backward", "backward-end" or "optimizer-step"
    wall_seconds: float
    phases: dict[str, int] = field(default_factory=dict)  # peak total bytes of each phase

    @property
    def peak_bytes(self) -> int:
        return self.memory.total_bytes

    @property
    def extrapolated(self) -> bool:
        return self.simulated_layers != (self.num_layers,)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.memory.to_dict(),
            "peak_phase": self.peak_phase,
            "phases": dict(self.phases),
            "simulated_layers": list(self.simulated_layers),
            "num_layers": self.num_layers,
            "extrapolated": self.extrapolated,
            "wall_seconds": self.wall_seconds,
        }


def simulate_training(spec: ModelSpec, setup: TrainingSetup, *, extrapolate_above_layers: int = 3) -> SimulationResult:
    """Measured peak memory of one training step of `spec` under `setup` (single GPU, fake tensors).

    Models deeper than `extrapolate_above_layers` are simulated at 2 and 3 layers and extrapolated.
    """
    _check_supported(spec, setup)
    started = time.perf_counter()
    if spec.num_layers <= extrapolate_above_layers:
        phases = _measure(spec, setup, spec.num_layers)
        simulated: tuple[int, ...] = (spec.num_layers,)
    else:
        # Depths 2 and 3 rather than 1 and 2: a 1-layer model's first block is also its last, and
        # its loss tensors can outweigh everything else, which no deeper model repeats.
        two, three = _measure(spec, setup, 2), _measure(spec, setup, 3)
        extra_layers = spec.num_layers - 2
        # Each moment's bytes are affine in the layer count: value(L) = value(2) + (L-2) * (value(3) - value(2)).
        phases = {
            phase: {c: two[phase][c] + extra_layers * (three[phase][c] - two[phase][c]) for c in CATEGORIES}
            for phase in two
        }
        simulated = (2, 3)
    totals = {phase: sum(values.values()) for phase, values in phases.items()}
    peak_phase = max(totals, key=totals.__getitem__)
    return SimulationResult(
        memory=MemoryBreakdown(phases[peak_phase], peak_phase=peak_phase),
        simulated_layers=simulated,
        num_layers=spec.num_layers,
        peak_phase=peak_phase,
        wall_seconds=round(time.perf_counter() - started, 3),
        phases=totals,
    )


def _check_supported(spec: ModelSpec, setup: TrainingSetup) -> None:
    if spec.kind != "decoder":
        raise UserInputError(f"simulation supports decoder (causal LM) models; {spec.name} is {spec.kind}")
    if setup.method not in SIMULATED_METHODS:
        raise UserInputError(
            f"simulation supports methods {', '.join(SIMULATED_METHODS)}; got {setup.method!r} "
            "(quantized and prompt methods need CUDA kernels fake tensors cannot run)"
        )
    if setup.optimizer not in SIMULATED_OPTIMIZERS:
        raise UserInputError(
            f"simulation supports optimizers {', '.join(SIMULATED_OPTIMIZERS)}; got {setup.optimizer!r} "
            "(8-bit optimizers need bitsandbytes on a GPU)"
        )
    if setup.recompute == "selective":
        raise UserInputError("simulation supports recompute 'none' and 'full'; transformers has no selective mode")
    if setup.loss == "fused":
        raise UserInputError(
            "simulation supports loss 'standard' and 'chunked'; Liger's fused cross-entropy runs Triton kernels on "
            "CUDA only (its memory is priced analytically from Liger's allocations)"
        )
    if not spec.config:
        raise UserInputError(f"{spec.name} carries no Hugging Face config to build the model from")


def _hf_config(spec: ModelSpec, num_layers: int, attention: str) -> PretrainedConfig:
    from transformers import AutoConfig

    values = {k: v for k, v in spec.config.items() if k not in ("model_type", "architectures", "auto_map")}
    values["num_hidden_layers"] = num_layers
    values["use_cache"] = False
    if attention == "sdpa":
        # GPU flash/efficient kernels apply attention dropout inside the kernel without an s x s tensor;
        # the CPU fallback would materialise it, so attention dropout is off here (residual dropout stays).
        attention_dropout_key = "attn_pdrop" if spec.model_type == "gpt2" else "attention_dropout"
        values[attention_dropout_key] = 0.0
    for key in ("first_k_dense_replace",):  # DeepSeek: keep the layer count consistent when shrinking
        if key in values:
            values[key] = min(values[key], num_layers)
    values.pop("layer_types", None)  # rebuilt for the new depth by configs that have it
    config = AutoConfig.for_model(spec.model_type, **values)
    config._attn_implementation = _unmasked_sdpa() if attention == "sdpa" else attention
    return config


def _measure(spec: ModelSpec, setup: TrainingSetup, num_layers: int) -> dict[str, dict[str, int]]:
    """Peak bytes by category of the forward-backward phase and of the optimizer-step phase."""
    try:
        import torch
        from torch._subclasses.fake_tensor import FakeTensorMode
        from transformers import AutoModelForCausalLM
    except ImportError as error:  # pragma: no cover - torch and transformers are declared dependencies
        raise DependencyError(f"simulation needs torch and transformers: {error}") from error

    # flash-attn 2 and SDPA's flash kernel keep the same tensors (q, k, v, output, log-sum-exp); the CPU run uses SDPA.
    config = _hf_config(spec, num_layers, "eager" if setup.attention == "eager" else "sdpa")
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(setup.precision)
    if setup.precision == "bf16":
        param_dtype = torch.bfloat16
    elif autocast_dtype is not None and setup.method != "full":
        param_dtype = autocast_dtype  # a frozen base is loaded in half precision; peft keeps adapters fp32
    else:
        param_dtype = torch.float32
    # Built on the meta device (no memory, no init), then every tensor becomes a CPU fake tensor.
    try:
        with torch.device("meta"):
            model: Any = AutoModelForCausalLM.from_config(config, dtype=param_dtype)  # a class the config names
            if setup.loss == "chunked":
                _add_chunked_head(model)
            if setup.method == "lora":
                model = _add_lora(model, setup)
    except ValueError as error:  # e.g. an architecture without SDPA support
        raise UserInputError(f"transformers cannot build {spec.name} for this simulation: {error}") from error
    if setup.recompute == "full":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if setup.method == "lora":
            model.enable_input_require_grads()  # what peft / Trainer do so checkpointed LoRA layers get grads
    fake_mode = FakeTensorMode(allow_non_fake_inputs=False)
    _to_fake(model, fake_mode)
    with fake_mode, _gpu_loss_kernels(setup.loss):
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizers = _optimizers(setup, trainable)
        for param in trainable:  # initialise optimizer states: measure the steady-state step
            param.grad = torch.zeros_like(param)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if setup.optimizer_in_backward:
            _step_in_backward(trainable, optimizers)
        ids = torch.randint(0, config.vocab_size, (setup.micro_batch_size, setup.seq_len))
        inputs = {"input_ids": ids, "labels": ids, **({"fused_lm_head": True} if setup.loss == "chunked" else {})}

        forward_backward = _tracker(model)
        forward_backward.track_external(model, *optimizers, ids)
        with forward_backward:
            with (
                torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None),
                _offloaded(model, setup.offload_activations),
            ):
                try:
                    loss = model(**inputs).loss  # the output and its logits die here, as in Trainer
                except RuntimeError as error:  # e.g. MoE grouped_mm kernels that only take bf16 weights
                    raise UserInputError(
                        f"{spec.name} does not run on fake tensors with precision {setup.precision}: "
                        f"{str(error).splitlines()[0]}"
                    ) from error
            loss.backward()
        del loss
        step = _tracker(model)
        step.track_external(model, *optimizers)
        with step:
            if not setup.optimizer_in_backward:  # otherwise every parameter has already stepped
                for optimizer in optimizers:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
    adapter_bytes = sum(p.numel() * p.element_size() for p in trainable) if setup.method == "lora" else 0
    return {
        "forward-backward": _categorise(_peak(forward_backward), adapter_bytes, setup),
        # The end of backward, inside the first block's or the embedding's backward: (nearly) every
        # gradient exists while the last activations go.
        "backward-end": _categorise(_backward_end(forward_backward, model), adapter_bytes, setup),
        "optimizer-step": _categorise(_peak(step), adapter_bytes, setup),
    }


_UNMASKED_SDPA = "lmforge_unmasked_sdpa"


def _unmasked_sdpa() -> str:
    """SDPA as a GPU runs an unpadded batch: no mask, is_causal=True, GQA without repeating k and v.

    transformers cannot prove "unpadded" on fake tensors, so under plain "sdpa" it would build an s x s
    mask and repeat k/v; an attention implementation it has no mask function for gets no mask at all.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    AttentionInterface.register(_UNMASKED_SDPA, sdpa_attention_forward)  # idempotent: same name, same function
    return _UNMASKED_SDPA


class _NoHook:
    def remove(self) -> None:
        pass


def _tracker(model: Any) -> MemTracker:
    """A MemTracker that leaves frozen parameters alone and keeps per-module peaks only where we read them.

    MemTracker (torch 2.13) registers a gradient hook on every parameter, which fails on the frozen
    base weights of a LoRA model; marking their hooks as already installed skips them. It also updates
    every module's peak after every op (most of a simulation's time on LoRA models with their many
    small modules); we only read the first block's and the embedding's.
    """
    from copy import deepcopy

    from torch.distributed._tools.mem_tracker import MemTracker, _State

    watched = [m for name, m in model.named_modules() if name.endswith(("layers.0", "embed_tokens"))]

    class _Tracker(MemTracker):
        def _update_peak_stats(self, peak_state: _State) -> None:  # same bookkeeping, restricted to `watched`
            current = self._curr_mem_snap
            for module in watched:
                stats = self.memory_tracking.get(module)
                if stats is None or stats.mod_fqn not in self._mod_tracker.parents or peak_state not in stats.snapshots:
                    continue
                for device, snapshot in current.items():
                    if stats.local_peak.get(device, 0) < snapshot["Total"]:
                        stats.local_peak[device] = snapshot["Total"]
                        stats.snapshots[peak_state][-1][device] = deepcopy(snapshot)
            for device, snapshot in current.items():
                if self._peak_mem.get(device, 0) < snapshot["Total"]:
                    self._peak_mem[device] = snapshot["Total"]
                    self._peak_mem_snap[device] = deepcopy(snapshot)

    tracker = _Tracker()
    for param in model.parameters():
        if not param.requires_grad:
            tracker._param_to_grad_hook_handles[param] = (_NoHook(), _NoHook())
    return tracker


def _to_fake(model: Any, fake_mode: FakeTensorMode) -> None:
    """Swap every meta parameter and buffer for a CPU fake tensor of the same shape (tied weights stay tied)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    swapped: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                if id(tensor) not in swapped:
                    fake: torch.Tensor = FakeTensor(fake_mode, tensor.detach(), torch.device("cpu"))
                    if isinstance(tensor, torch.nn.Parameter):
                        fake = torch.nn.Parameter(fake, requires_grad=tensor.requires_grad)
                    swapped[id(tensor)] = fake
                table[name] = swapped[id(tensor)]


def _add_lora(model: Any, setup: TrainingSetup) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = list(setup.target_modules) if setup.target_modules else "all-linear"
    config = LoraConfig(r=setup.lora_r, lora_alpha=setup.lora_alpha, target_modules=targets, lora_dropout=0.0)
    return get_peft_model(model, config)


def _optimizers(setup: TrainingSetup, params: list[Tensor]) -> list[Optimizer]:
    """The optimizers a Trainer builds by default (fused AdamW in transformers >= 4.5x on torch >= 2.8; SGD with
    momentum; torch's Adafactor); with optimizer_in_backward one per parameter, as torchtune's recipes build them."""
    import torch

    def build(group: list[Tensor]) -> Optimizer:
        if setup.optimizer == "adamw":
            return torch.optim.AdamW(group, lr=1e-5, fused=True)
        if setup.optimizer == "sgd":
            return torch.optim.SGD(group, lr=1e-3, momentum=0.9)
        return torch.optim.Adafactor(group, lr=1e-3)

    if setup.optimizer_in_backward:
        return [build([param]) for param in params]
    return [build(params)]


def _step_in_backward(params: list[Tensor], optimizers: list[Optimizer]) -> None:
    """torchtune's optimizer_in_bwd: step each parameter in its post-accumulate-grad hook and free its gradient."""
    for param, optimizer in zip(params, optimizers, strict=True):

        def step(_: Any, optimizer: Any = optimizer) -> None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        param.register_post_accumulate_grad_hook(step)


def _add_chunked_head(model: Any) -> None:
    """trl's chunked log-prob LM head (what `train.loss: chunked` runs): called with fused_lm_head=True."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)


@contextmanager
def _gpu_loss_kernels(loss: str) -> Iterator[None]:
    """trl's chunked head as it runs on a GPU: there its tile folds are Triton kernels and its fp32 gradient
    accumulation one `addmm(out_dtype=float32, out=acc)`, none of which allocates; the CPU fallbacks would add
    fp32 copies of every 4096 x 32768 tile that no GPU run makes. They update buffers in place, so a no-op
    allocates exactly what the kernels do (fake tensors have no values to get wrong)."""
    if loss != "chunked":
        yield
        return
    from trl.kernels import chunked_logprob

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    saved = {name: getattr(chunked_logprob, name) for name in ("_forward_tile", "_backward_tile", "_addmm_fp32")}
    try:
        for name in saved:
            setattr(chunked_logprob, name, nothing)
        yield
    finally:
        for name, function in saved.items():
            setattr(chunked_logprob, name, function)


# trl's OffloadActivations (torchtune's) leaves tensors under this many bytes on the GPU.
_MIN_OFFLOAD_BYTES = 1024


@contextmanager
def _offloaded(model: Any, enabled: bool) -> Iterator[None]:
    """Activation offloading as trl's / torchtune's OffloadActivations does it, seen from the GPU: every tensor
    the decoder saves for backward moves to CPU RAM in the forward (the tracker no longer sees it) and comes
    back, freshly allocated, when backward needs it. Parameters (and views of their storage) and tensors under
    1 KiB stay; the output head and the loss run outside it (torchtune computes the loss outside the context
    and wraps the head in a NoOpManager)."""
    if not enabled:
        yield
        return
    import torch

    storages = {p.untyped_storage()._cdata for p in model.parameters()}

    def pack(tensor: Tensor) -> Tensor | tuple[Any, ...]:
        if (
            isinstance(tensor, torch.nn.Parameter)
            or tensor.untyped_storage()._cdata in storages
            or tensor.numel() * tensor.element_size() < _MIN_OFFLOAD_BYTES
        ):
            return tensor
        return (tensor.shape, tensor.dtype, tensor.device)

    def unpack(packed: Tensor | tuple[Any, ...]) -> Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        shape, dtype, device = packed
        return torch.empty(shape, dtype=dtype, device=device)

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    offloading = torch.autograd.graph.saved_tensors_hooks(pack, unpack)
    backbone = base.get_decoder()
    hooks = [
        backbone.register_forward_pre_hook(lambda module, args: offloading.__enter__()),
        backbone.register_forward_hook(lambda module, args, output: offloading.__exit__(None, None, None)),
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _peak(tracker: MemTracker) -> dict[Any, int]:
    return next(iter(tracker.get_tracker_snapshot("peak").values()), {})


def _backward_end(tracker: MemTracker, model: Any) -> dict[Any, int]:
    """The larger of MemTracker's backward-peak snapshots of the first block and of the input embedding
    (its documented per-module snapshots); the embedding has none when it is frozen."""
    found: list[dict[Any, int]] = []
    for name, module in model.named_modules():
        if not (name.endswith(("layers.0", "embed_tokens"))) or module not in tracker.memory_tracking:
            continue
        snapshots = tracker.memory_tracking[module].snapshots
        for state, per_call in snapshots.items():
            if getattr(state, "name", "") == "PEAK_BW" and per_call:
                found.append(next(iter(per_call[-1].values()), {}))
    return max(found, key=lambda snap: sum(v for k, v in snap.items() if k != "Total"), default={})


def _categorise(snapshot: dict[Any, int], adapter_bytes: int, setup: TrainingSetup) -> dict[str, int]:
    """MemTracker's PARAM/BUFFER/GRAD/ACT/TEMP/OPT at one moment, mapped onto the planner's categories."""
    by_name = {getattr(key, "name", str(key)): value for key, value in snapshot.items()}
    params = by_name.get("PARAM", 0)
    out = dict.fromkeys(CATEGORIES, 0)
    frozen_or_all = params - adapter_bytes
    # With "-mixed" the fp32 parameters are the master copy; their half-precision working copies
    # (autocast's casts, saved for backward) show up under activations.
    out["master_weights" if setup.precision.endswith("-mixed") and setup.method == "full" else "weights"] = (
        frozen_or_all
    )
    out["adapter"] = adapter_bytes
    out["gradients"] = by_name.get("GRAD", 0)
    out["optimizer_states"] = by_name.get("OPT", 0)
    out["activations"] = by_name.get("ACT", 0)
    out["buffers"] = by_name.get("TEMP", 0) + by_name.get("BUFFER", 0) + by_name.get("OTH", 0)
    return out

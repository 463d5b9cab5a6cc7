"""Layout search: the fewest GPUs of one type that hold a job, and how to lay the job out on them.

Every candidate is a real `Layout` (DP × TP × PP, expert parallelism inside DP, ZeRO stage, offload) that
respects the hard constraints (TP divides the attention and KV heads and stays inside a node; PP is at most
the number of layers; DeepSpeed pipelines take ZeRO 0/1 only; EP divides the experts and the DP ranks;
DP × TP × PP = GPUs). The memory model prices each one; a layout fits when its per-GPU peak leaves
`headroom` of the card free.

Training: one search over every layout finds the fewest GPUs. Among the layouts that fit on that many,
the ones `lmforge train` runs (DDP, DeepSpeed ZeRO, FSDP: TP = PP = EP = 1) come first, then the usual
strategy table of LLM-training guides orders the rest (docs/plan.md):
  small model, many GPUs  -> pure data parallel (DDP, else ZeRO-2: same traffic as DDP)
  does not fit one GPU    -> ZeRO-3 before any model parallelism (simpler than TP/PP)
  > 100B parameters       -> 3D: TP inside the node, PP across nodes, ZeRO-1 for the optimizer
  sequences > 32K tokens  -> sequence parallel + tensor parallel
Tensor parallelism always comes with sequence parallelism (Korthikanti et al. 2022: the same traffic, the
norms' activations split too). A layout lmforge train cannot drive names the engine that can.
CPU offload is slow, so it is used only when the user asks for it.

Inference: decode speed, not only the count, decides. Tensor-parallel ranks stream their shards at once
(TP k is k times faster on k GPUs) while pipeline stages take turns (PP adds GPUs, no speed), so the
search takes the fewest pipeline stages, then the fewest GPUs: the highest decode tokens/s per GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from lmforge.errors import UserInputError
from lmforge.plan.hardware import GIB, Accelerator
from lmforge.plan.setup import InferenceSetup, Layout, MemoryBreakdown, TrainingSetup
from lmforge.plan.spec import ModelSpec

MAX_TP = 8  # one node of 8 GPUs: tensor parallelism needs NVLink-class bandwidth (Shoeybi et al. 2019, Megatron-LM §3)
MAX_GPUS = 4096
DEFAULT_HEADROOM = 0.10
THREE_D_ABOVE_PARAMS = 100e9  # rule of thumb (strategy table, docs/plan.md): "very large models (> 100B)" -> 3D
LONG_SEQUENCE_TOKENS = 32 * 1024  # rule of thumb (docs/plan.md): "very long sequences (> 32K)" -> SP + TP
OFFLOAD_CHOICES = ("none", "optimizer", "params", "both")
EP_DEGREES = (1, 2, 4, 8, 16, 32, 64)  # expert-parallel degrees tried (those dividing the expert count)
# Same number of GPUs: DDP, then ZeRO-2 (same communication volume as DDP, ZeRO paper §7), ZeRO-1, ZeRO-3 (1.5x).
_ZERO_PREFERENCE = {0: 0, 2: 1, 1: 2, 3: 3}

# A sort key among layouts on the same number of GPUs: the smallest tuple is the preferred layout.
_Preference = Callable[[Layout], tuple[int, ...]]


@dataclass(frozen=True)
class LayoutRequest:
    """What the user fixed; None leaves it to the search."""

    gpus: int | None = None
    tp: int | None = None
    pp: int | None = None
    zero_stage: int | None = None
    offload: str = "none"  # none | optimizer | params | both
    ep: int | None = None


@dataclass(frozen=True)
class LayoutChoice:
    layout: Layout
    memory: MemoryBreakdown
    usable_bytes: int  # card memory minus headroom
    fits: bool
    reason: str  # one line: why this layout

    @property
    def gpus(self) -> int:
        return self.layout.gpus


def engine_needed(layout: Layout, setup: TrainingSetup | None = None) -> str | None:
    """The engine a training layout needs when `lmforge train` (Trainer + accelerate: DDP, DeepSpeed ZeRO-2/3,
    FSDP) cannot run it; None when it can."""
    needs = []
    if layout.tp > 1 or layout.pp > 1 or layout.ep > 1:
        kinds = [
            k for k, on in (("tensor", layout.tp > 1), ("pipeline", layout.pp > 1), ("expert", layout.ep > 1)) if on
        ]
        needs.append(f"{'/'.join(kinds)} parallelism: Megatron-LM (Megatron-DeepSpeed, torchtitan)")
    if setup is not None:
        if setup.method == "qlora" and layout.zero_stage == 3:
            needs.append(
                "QLoRA sharded by ZeRO-3/FSDP: axolotl or LLaMA-Factory (FSDP-QLoRA); lmforge train refuses it"
            )
        if setup.offload_activations or setup.optimizer_in_backward:
            needs.append("activation offloading / optimizer in backward: torchtune's recipes")
    if not needs:
        return None
    return "; ".join(needs) + " - lmforge train does not drive this"


def valid_tp_degrees(spec: ModelSpec, gpus_per_node: int = 8) -> list[int]:
    """TP degrees that split every attention head group evenly and stay inside one node."""
    limit = min(MAX_TP, gpus_per_node)
    return [tp for tp in range(1, limit + 1) if spec.num_attention_heads % tp == 0 and spec.num_kv_heads % tp == 0]


def valid_ep_degrees(spec: ModelSpec) -> list[int]:
    """EP degrees that split the routed experts evenly (1 for a dense model)."""
    return [ep for ep in EP_DEGREES if spec.num_experts and spec.num_experts % ep == 0] or [1]


def pipeline_degrees(num_layers: int) -> list[int]:
    """PP degrees the search tries: the divisors of the layer count (equal stages) and the powers of two
    (what clusters are built from). Stages need not be equal: DeepSpeed's uniform partition and Megatron's
    first/last-stage layer counts split 61 layers (DeepSeek-V3) over 8 stages as 8 and 7; the memory model
    prices every stage from its own layers."""
    powers = {2**k for k in range(num_layers.bit_length()) if 2**k <= num_layers}
    return sorted({d for d in range(1, num_layers + 1) if num_layers % d == 0} | powers)


def validate_request(spec: ModelSpec, request: LayoutRequest, accelerator: Accelerator, training: bool) -> None:
    """Reject layouts that cannot exist, saying which constraint they break."""
    for name in ("gpus", "tp", "pp", "ep"):
        value = getattr(request, name)
        if value is not None and (isinstance(value, bool) or value <= 0):
            raise UserInputError(f"--{name} must be a positive integer, got {value}")
    if request.offload not in OFFLOAD_CHOICES:
        raise UserInputError(f"--offload {request.offload!r} is not one of {', '.join(OFFLOAD_CHOICES)}")
    if request.zero_stage is not None and request.zero_stage not in (0, 1, 2, 3):
        raise UserInputError(f"--zero must be 0, 1, 2 or 3, got {request.zero_stage}")
    tp, pp, ep = request.tp, request.pp, request.ep
    if tp is not None:
        if tp > min(MAX_TP, accelerator.gpus_per_node):
            raise UserInputError(
                f"TP {tp} exceeds one node of {min(MAX_TP, accelerator.gpus_per_node)} GPUs; "
                "tensor parallelism needs the intra-node links, use PP across nodes"
            )
        for heads, what in ((spec.num_attention_heads, "attention heads"), (spec.num_kv_heads, "KV heads")):
            if heads % tp:
                raise UserInputError(
                    f"TP {tp} does not divide {heads} {what} of {spec.name}; try TP in {valid_tp_degrees(spec)}"
                )
    if pp is not None and pp > spec.num_layers:
        raise UserInputError(f"PP {pp} is more pipeline stages than the {spec.num_layers} layers of {spec.name}")
    if ep is not None and ep > 1:
        if not spec.is_moe:
            raise UserInputError(
                f"--ep {ep}: expert parallelism needs a mixture-of-experts model; {spec.name} is dense"
            )
        if spec.num_experts % ep:
            raise UserInputError(f"EP {ep} does not divide the {spec.num_experts} experts of {spec.name}")
        if not training:
            raise UserInputError("--ep applies to training only")
    if request.gpus is not None:
        fixed = (tp or 1) * (pp or 1)
        if request.gpus % fixed:
            raise UserInputError(
                f"{request.gpus} GPUs cannot be split into TP {tp or 1} × PP {pp or 1} (DP must be whole)"
            )
        if ep and (request.gpus // fixed) % ep:
            raise UserInputError(
                f"EP {ep} must divide the {request.gpus // fixed} data-parallel ranks of {request.gpus} GPUs"
            )
    if not training:
        if request.zero_stage or request.offload != "none":
            raise UserInputError("--zero and --offload apply to training only")
        return
    zero = request.zero_stage
    if zero is not None and pp is not None and pp > 1 and zero >= 2:
        raise UserInputError(
            f"ZeRO-{zero} cannot be combined with pipeline parallelism (DeepSpeed allows ZeRO 0 or 1 with PP)"
        )
    if zero is not None and request.offload in ("params", "both") and zero < 3:
        raise UserInputError(
            f"--offload {request.offload} needs ZeRO-3 (parameters must be sharded), got --zero {zero}"
        )
    if zero == 0 and request.offload == "optimizer":
        raise UserInputError("--offload optimizer needs ZeRO stage 1, 2 or 3 (ZeRO-Offload), got --zero 0")
    if request.offload in ("params", "both") and pp is not None and pp > 1:
        raise UserInputError("--offload params needs ZeRO-3, which cannot be combined with pipeline parallelism")


class LayoutSearch:
    """Searches layouts for one model and setup; memory figures are cached per layout, so checking the
    same job against every GPU type in the catalog costs little more than checking one."""

    def __init__(self, spec: ModelSpec, setup: TrainingSetup | InferenceSetup, params_total: int) -> None:
        self.spec = spec
        self.setup = setup
        self.params_total = params_total
        self._cache: dict[Layout, MemoryBreakdown] = {}
        self._found: dict[tuple[int, int, LayoutRequest, int], tuple[Layout, bool]] = {}

    @property
    def training(self) -> bool:
        return isinstance(self.setup, TrainingSetup)

    def memory(self, layout: Layout) -> MemoryBreakdown:
        if layout not in self._cache:
            from lmforge.plan import memory

            if isinstance(self.setup, TrainingSetup):
                self._cache[layout] = memory.training_memory(self.spec, self.setup, layout)
            else:
                self._cache[layout] = memory.inference_memory(self.spec, self.setup, layout)
        return self._cache[layout]

    # -- candidates --------------------------------------------------------------------------------

    def _shapes(self, accelerator: Accelerator, request: LayoutRequest) -> list[Layout]:
        """Every (TP, PP, EP, ZeRO, offload) shape with the smallest DP it allows; the search then widens DP."""
        tps = [request.tp] if request.tp else valid_tp_degrees(self.spec, accelerator.gpus_per_node)
        pps = [request.pp] if request.pp else pipeline_degrees(self.spec.num_layers)
        if not isinstance(self.setup, TrainingSetup):
            return [Layout(tp=tp, pp=pp) for tp in tps for pp in pps]
        eps = [request.ep] if request.ep else valid_ep_degrees(self.spec)
        offload_optimizer = request.offload in ("optimizer", "both")
        offload_params = request.offload in ("params", "both")
        in_backward = self.setup.optimizer_in_backward
        shapes = []
        for tp in tps:
            for pp in pps:
                for ep in eps:
                    zeros = [request.zero_stage] if request.zero_stage is not None else [0, 1, 2, 3]
                    for zero in zeros:
                        if pp > 1 and zero >= 2:
                            continue  # DeepSpeed's PipelineEngine asserts ZeRO < 2
                        if (offload_params and zero < 3) or (offload_optimizer and zero == 0):
                            continue
                        if in_backward and (zero not in (0, 3) or tp * pp * ep > 1):
                            continue  # torchtune steps in backward on one device or under FSDP's per-parameter shards
                        shapes.append(
                            Layout(
                                dp=ep,
                                tp=tp,
                                pp=pp,
                                ep=ep,
                                zero_stage=zero,
                                offload_optimizer=offload_optimizer,
                                offload_params=offload_params,
                                sequence_parallel=tp > 1,
                            )
                        )
        return shapes

    def _strategy(self) -> tuple[str, _Preference]:
        """(name, preference key) among layouts on the same number of GPUs: the ones lmforge train runs first,
        then the strategy table (module docstring) for this model and setup."""
        setup = self.setup
        if not isinstance(setup, TrainingSetup):
            return "inference", lambda l: (l.pp, l.gpus, l.tp)
        key: _Preference
        if setup.seq_len > LONG_SEQUENCE_TOKENS:
            name, key = "long-sequence", lambda l: (-l.tp, l.pp, l.ep, _ZERO_PREFERENCE[l.zero_stage])
        elif self.params_total > THREE_D_ABOVE_PARAMS:
            name, key = "3d", lambda l: (l.zero_stage > 1, -l.tp, l.pp, l.ep, _ZERO_PREFERENCE[l.zero_stage])
        else:
            name, key = "data-parallel", lambda l: (l.pp, l.tp, l.ep, _ZERO_PREFERENCE[l.zero_stage])
        return name, lambda l: (engine_needed(l, setup) is not None, *key(l))

    # -- search ------------------------------------------------------------------------------------

    def _fits(self, layout: Layout, usable_bytes: int) -> bool:
        return self.memory(layout).total_bytes <= usable_bytes

    def _min_dp(self, shape: Layout, usable_bytes: int, max_gpus: int) -> int | None:
        """Smallest DP (a multiple of EP) at which `shape` fits (per-GPU memory never grows with DP): one check
        at the bound rules most shapes out; for the rest, doubling then bisecting finds small answers in a few
        checks."""
        step = shape.ep
        max_k = max_gpus // (shape.tp * shape.pp * step)
        if not self.training or shape.zero_stage == 0:
            max_k = min(max_k, 1)  # without sharding, more replicas hold no less each

        def fits(k: int) -> bool:
            return self._fits(replace(shape, dp=k * step), usable_bytes)

        if max_k < 1 or not fits(max_k):
            return None
        high = 1
        while high < max_k and not fits(high):
            high *= 2
        low, high = high // 2 + 1, min(high, max_k)
        while low < high:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle + 1
        return low * step

    def best(
        self,
        accelerator: Accelerator,
        request: LayoutRequest = LayoutRequest(),
        *,
        headroom: float = DEFAULT_HEADROOM,
        max_gpus: int = MAX_GPUS,
    ) -> LayoutChoice:
        """The recommended layout on `accelerator`: fewest GPUs that fit (inference: fastest decode per GPU),
        then the preference order of `_strategy`."""
        if not 0 <= headroom < 1:
            raise UserInputError(f"headroom must be in [0, 1), got {headroom}")
        validate_request(self.spec, request, accelerator, self.training)
        usable = int(accelerator.memory_bytes * (1 - headroom))
        shapes = self._shapes(accelerator, request)
        strategy, preference = self._strategy()
        if request.gpus is not None:
            return self._best_at(request.gpus, shapes, usable, strategy, preference, accelerator, request)
        key = (usable, accelerator.gpus_per_node, request, max_gpus)
        if key not in self._found:  # cards of the same size get the same answer
            self._found[key] = self._fewest(shapes, usable, preference, max_gpus)
        chosen, fits = self._found[key]
        if fits:
            return LayoutChoice(
                chosen, self.memory(chosen), usable, True, _reason(strategy, chosen, self, accelerator, request)
            )
        return LayoutChoice(
            chosen,
            self.memory(chosen),
            usable,
            False,
            f"does not fit on up to {max_gpus} × {accelerator.name}: even {_describe(chosen)} needs "
            f"{self.memory(chosen).total_bytes / GIB:.1f} GiB per GPU of {usable / GIB:.1f} GiB usable",
        )

    def best_for_each(
        self,
        accelerators: list[Accelerator],
        request: LayoutRequest = LayoutRequest(),
        *,
        headroom: float = DEFAULT_HEADROOM,
    ) -> dict[str, LayoutChoice | UserInputError]:
        """`best` for many cards, smallest memory first: what fits a smaller card fits a bigger one with
        the same node size, so each training answer bounds the next search (fewer layouts to price)."""
        results: dict[str, LayoutChoice | UserInputError] = {}
        bounds: dict[int, int] = {}  # gpus_per_node -> fewest GPUs found so far
        for card in sorted(accelerators, key=lambda a: a.memory_bytes):
            try:
                bound = bounds.get(card.gpus_per_node, MAX_GPUS) if self.training else MAX_GPUS
                choice = self.best(card, request, headroom=headroom, max_gpus=bound)
            except UserInputError as error:  # e.g. --tp 8 on a card whose node holds fewer GPUs
                results[card.name] = error
                continue
            if choice.fits:
                bounds[card.gpus_per_node] = choice.gpus
            results[card.name] = choice
        return results

    def fitting_counts(
        self,
        accelerator: Accelerator,
        request: LayoutRequest = LayoutRequest(),
        *,
        headroom: float = DEFAULT_HEADROOM,
        max_gpus: int = MAX_GPUS,
    ) -> dict[Layout, int]:
        """Every shape the search prices, with the fewest GPUs at which it fits (shapes that never fit are left out)."""
        usable = int(accelerator.memory_bytes * (1 - headroom))
        found = {}
        for shape in self._shapes(accelerator, request):
            dp = self._min_dp(shape, usable, max_gpus)
            if dp is not None:
                found[shape] = dp * shape.tp * shape.pp
        return found

    def _fewest(self, shapes: list[Layout], usable: int, preference: _Preference, max_gpus: int) -> tuple[Layout, bool]:
        """(layout, fits): one search over every shape; of those on the fewest GPUs, the preferred one."""
        if not self.training:
            fitting = [s for s in shapes if s.gpus <= max_gpus and self._fits(s, usable)]
            if fitting:
                return min(fitting, key=preference), True
            return min(shapes, key=lambda l: self.memory(l).total_bytes), False
        # Most-sharded shapes first: they set a low GPU bound early, so most others need one check.
        bound, fitting_gpus = max_gpus, []
        for shape in sorted(shapes, key=lambda s: (-s.zero_stage, s.tp * s.pp, -s.ep)):
            dp = self._min_dp(shape, usable, bound)
            if dp is not None:
                fitting_gpus.append((dp * shape.tp * shape.pp, shape))
                bound = min(bound, dp * shape.tp * shape.pp)
        if fitting_gpus:
            at_min = [_with_dp(s, bound) for n, s in fitting_gpus if n == bound]
            return min(at_min, key=preference), True
        widest = [replace(s, dp=s.ep * max(max_gpus // (s.tp * s.pp * s.ep), 1)) for s in shapes]
        return min(widest, key=lambda l: self.memory(l).total_bytes), False

    def _best_at(
        self,
        gpus: int,
        shapes: Iterable[Layout],
        usable: int,
        strategy: str,
        preference: _Preference,
        accelerator: Accelerator,
        request: LayoutRequest,
    ) -> LayoutChoice:
        candidates = [_with_dp(s, gpus) for s in shapes if gpus % (s.tp * s.pp * s.ep) == 0]
        if not isinstance(self.setup, TrainingSetup):
            candidates = [c for c in candidates if c.dp == 1]
        elif self.setup.optimizer_in_backward:
            candidates = [c for c in candidates if c.zero_stage == 3 or c.dp == 1]
        if not candidates:
            raise UserInputError(
                f"no valid layout uses exactly {gpus} GPUs for {self.spec.name}: "
                + ("inference uses TP × PP = GPUs, " if not self.training else "")
                + f"TP must be in {valid_tp_degrees(self.spec, accelerator.gpus_per_node)} and PP in "
                f"{pipeline_degrees(self.spec.num_layers)} (or give --pp)"
            )
        fitting = [c for c in candidates if self._fits(c, usable)]
        if fitting:
            chosen = min(fitting, key=preference)
            return LayoutChoice(
                chosen, self.memory(chosen), usable, True, _reason(strategy, chosen, self, accelerator, request)
            )
        smallest = min(candidates, key=lambda l: self.memory(l).total_bytes)
        needed = self.best(accelerator, replace(request, gpus=None), headroom=1 - usable / accelerator.memory_bytes)
        hint = (
            f"; needs {needed.gpus} × {accelerator.name} ({_describe(needed.layout)})"
            if needed.fits
            else "; no layout of this card fits"
        )
        return LayoutChoice(
            smallest,
            self.memory(smallest),
            usable,
            False,
            f"does not fit on {gpus} × {accelerator.name}: the leanest layout ({_describe(smallest)}) needs "
            f"{self.memory(smallest).total_bytes / GIB:.1f} GiB per GPU of {usable / GIB:.1f} GiB usable{hint}",
        )


def _with_dp(shape: Layout, gpus: int) -> Layout:
    return replace(shape, dp=gpus // (shape.tp * shape.pp))


def _describe(layout: Layout) -> str:
    parts = [f"DP {layout.dp} × TP {layout.tp} × PP {layout.pp}"]
    if layout.ep > 1:
        parts.append(f"EP {layout.ep} (experts split over {layout.ep} DP ranks, two all-to-alls per MoE layer)")
    if layout.zero_stage:
        parts.append(
            f"ZeRO-{layout.zero_stage}"
            + (" on one rank (DeepSpeed mixed precision, nothing sharded)" if layout.dp == 1 else "")
        )
    if layout.offload_optimizer or layout.offload_params:
        what = " + ".join(
            w for w, on in (("optimizer", layout.offload_optimizer), ("params", layout.offload_params)) if on
        )
        parts.append(f"offload {what}")
    if layout.sequence_parallel:
        parts.append("sequence parallel")
    return ", ".join(parts)


def pipeline_bubble(pp: int, micro_batches: int) -> float:
    """Share of a 1F1B step the pipeline stands idle: (p - 1) / (m + p - 1) (Narayanan et al. 2021, §2.2)."""
    return (pp - 1) / (micro_batches + pp - 1)


def _reason(
    strategy: str, layout: Layout, search: LayoutSearch, accelerator: Accelerator, request: LayoutRequest
) -> str:
    """One line: why this layout (the rule that picked it), the engine it needs, and what a pipeline bubble costs."""
    shape = _describe(layout)
    fixed = [
        text
        for text, given in (
            (f"ZeRO-{request.zero_stage}", request.zero_stage is not None),
            (f"TP {request.tp}", request.tp is not None),
            (f"PP {request.pp}", request.pp is not None),
            (f"EP {request.ep}", request.ep is not None),
            (f"offload {request.offload}", request.offload != "none"),
        )
        if given
    ]
    if fixed:
        text = f"fits with the {', '.join(fixed)} you chose on {layout.gpus} × {accelerator.name}: {shape}"
    elif layout.gpus == 1:
        text = f"fits one {accelerator.name}: no parallelism needed ({shape})"
    elif not search.training:
        text = (
            f"fastest decode per GPU: TP {layout.tp} streams the weights with {layout.tp} cards' bandwidth"
            + (f", PP {layout.pp} only because TP {layout.tp} alone does not hold them" if layout.pp > 1 else "")
            + f" (pipeline stages add GPUs, not speed): {shape}"
        )
    elif layout.tp == 1 and layout.pp == 1 and layout.ep == 1:
        if layout.zero_stage == 0:
            text = f"model states fit every GPU: plain data parallel (DDP): {shape}"
        elif layout.zero_stage in (1, 2):
            text = f"small enough for data parallel; ZeRO-{layout.zero_stage} shards optimizer states at DDP's traffic: {shape}"
        else:
            text = f"does not fit one GPU: ZeRO-3 shards weights too, tried before model parallelism: {shape}"
        if strategy in ("3d", "long-sequence"):
            preferred = "3D parallelism" if strategy == "3d" else "tensor + sequence parallelism"
            text += f"; the usual strategy table prefers {preferred} here, which needs at least as many GPUs and Megatron-LM"
    else:
        parts = [f"TP {layout.tp} inside the node"] if layout.tp > 1 else []
        parts += [f"PP {layout.pp} across nodes"] if layout.pp > 1 else []
        parts += [f"EP {layout.ep} for the experts"] if layout.ep > 1 else []
        rule = {
            "long-sequence": "sequences > 32K tokens: tensor + sequence parallel split the activations",
            "3d": "> 100B parameters: 3D parallel, TP inside the node, PP across nodes, ZeRO for optimizer states",
        }.get(strategy, "ZeRO alone needs more GPUs")
        text = f"fewest GPUs need model parallelism ({', '.join(parts)}); {rule}: {shape}"
    if isinstance(search.setup, TrainingSetup):
        engine = engine_needed(layout, search.setup)
        if engine:
            text += f"; needs {engine}"
        if layout.pp > 1:
            micro_batches = search.setup.grad_accum
            bubble = pipeline_bubble(layout.pp, micro_batches)
            if bubble > 0.2:
                text += (
                    f"; PP {layout.pp} with {micro_batches} micro-batch{'es' if micro_batches > 1 else ''} per step idles "
                    f"{bubble:.0%} of the time (1F1B bubble (p-1)/(m+p-1)): --grad-accum {4 * layout.pp} brings it under 20%"
                )
    return text

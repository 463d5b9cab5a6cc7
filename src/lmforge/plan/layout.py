"""Layout search: the fewest GPUs of one type that hold a job, and how to lay the job out on them.

Every candidate is a real `Layout` (DP × TP × PP, ZeRO stage, offload) that respects the hard
constraints (TP divides the attention and KV heads and stays inside a node; PP is at most the number
of layers; DeepSpeed pipelines take ZeRO 0/1 only; DP × TP × PP = GPUs). The memory model prices each one;
a layout fits when its per-GPU peak leaves `headroom` of the card free.

Among the layouts that fit on the fewest GPUs, the choice follows seed 003 §4's strategy table:
  small model, many GPUs  -> pure data parallel (DDP, else ZeRO-2: same traffic as DDP)
  does not fit one GPU    -> ZeRO-3 before any model parallelism (simpler than TP/PP)
  > 100B parameters       -> 3D: TP inside the node, PP across nodes, ZeRO-1 for the optimizer
  sequences > 32K tokens  -> sequence parallel + tensor parallel
CPU offload is slow, so it is used only when the user asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from lmforge.errors import UserInputError
from lmforge.plan.hardware import GIB, Accelerator
from lmforge.plan.setup import InferenceSetup, Layout, MemoryBreakdown, TrainingSetup
from lmforge.plan.spec import ModelSpec

MAX_TP = 8  # one node of 8 GPUs: tensor parallelism needs NVLink-class bandwidth (seed 003 §4)
MAX_GPUS = 4096
DEFAULT_HEADROOM = 0.10
THREE_D_ABOVE_PARAMS = 100e9  # seed 003 §4: "模型极大(>100B)" -> 3D parallel
LONG_SEQUENCE_TOKENS = 32 * 1024  # seed 003 §4: "处理超长序列(>32K)" -> sequence + tensor parallel
OFFLOAD_CHOICES = ("none", "optimizer", "params", "both")
# Same number of GPUs: DDP, then ZeRO-2 (same communication volume as DDP, ZeRO paper §7), ZeRO-1, ZeRO-3 (1.5x).
_ZERO_PREFERENCE = {0: 0, 2: 1, 1: 2, 3: 3}


@dataclass(frozen=True)
class LayoutRequest:
    """What the user fixed; None leaves it to the search."""

    gpus: int | None = None
    tp: int | None = None
    pp: int | None = None
    zero_stage: int | None = None
    offload: str = "none"  # none | optimizer | params | both


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


def valid_tp_degrees(spec: ModelSpec, gpus_per_node: int = 8) -> list[int]:
    """TP degrees that split every attention head group evenly and stay inside one node."""
    limit = min(MAX_TP, gpus_per_node)
    return [tp for tp in range(1, limit + 1) if spec.num_attention_heads % tp == 0 and spec.num_kv_heads % tp == 0]


def pipeline_degrees(num_layers: int) -> list[int]:
    """PP degrees the search tries: the divisors of the layer count (equal stages) and the powers of two
    (what clusters are built from). Stages need not be equal: DeepSpeed's uniform partition and Megatron's
    first/last-stage layer counts split 61 layers (DeepSeek-V3) over 8 stages as 8 and 7; the memory model
    prices the fullest stage, ceil(layers / PP)."""
    powers = {2**k for k in range(num_layers.bit_length()) if 2**k <= num_layers}
    return sorted({d for d in range(1, num_layers + 1) if num_layers % d == 0} | powers)


def validate_request(spec: ModelSpec, request: LayoutRequest, accelerator: Accelerator, training: bool) -> None:
    """Reject layouts that cannot exist, saying which constraint they break."""
    for name in ("gpus", "tp", "pp"):
        value = getattr(request, name)
        if value is not None and (isinstance(value, bool) or value <= 0):
            raise UserInputError(f"--{name} must be a positive integer, got {value}")
    if request.offload not in OFFLOAD_CHOICES:
        raise UserInputError(f"--offload {request.offload!r} is not one of {', '.join(OFFLOAD_CHOICES)}")
    if request.zero_stage is not None and request.zero_stage not in (0, 1, 2, 3):
        raise UserInputError(f"--zero must be 0, 1, 2 or 3, got {request.zero_stage}")
    tp, pp = request.tp, request.pp
    if tp is not None:
        if tp > min(MAX_TP, accelerator.gpus_per_node):
            raise UserInputError(
                f"TP {tp} exceeds one node of {min(MAX_TP, accelerator.gpus_per_node)} GPUs; "
                "tensor parallelism needs the intra-node links, use PP across nodes"
            )
        for heads, what in ((spec.num_attention_heads, "attention heads"), (spec.num_kv_heads, "KV heads")):
            if heads % tp:
                raise UserInputError(f"TP {tp} does not divide {heads} {what} of {spec.name}; try TP in {valid_tp_degrees(spec)}")
    if pp is not None and pp > spec.num_layers:
        raise UserInputError(f"PP {pp} is more pipeline stages than the {spec.num_layers} layers of {spec.name}")
    if request.gpus is not None:
        fixed = (tp or 1) * (pp or 1)
        if request.gpus % fixed:
            raise UserInputError(f"{request.gpus} GPUs cannot be split into TP {tp or 1} × PP {pp or 1} (DP must be whole)")
    if not training:
        if request.zero_stage or request.offload != "none":
            raise UserInputError("--zero and --offload apply to training only")
        return
    zero = request.zero_stage
    if zero is not None and pp is not None and pp > 1 and zero >= 2:
        raise UserInputError(f"ZeRO-{zero} cannot be combined with pipeline parallelism (DeepSpeed allows ZeRO 0 or 1 with PP)")
    if zero is not None and request.offload in ("params", "both") and zero < 3:
        raise UserInputError(f"--offload {request.offload} needs ZeRO-3 (parameters must be sharded), got --zero {zero}")
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
        self.training = isinstance(setup, TrainingSetup)
        self.params_total = params_total
        self._cache: dict[Layout, MemoryBreakdown] = {}
        self._found: dict[tuple, tuple[Layout, bool, bool]] = {}
        self._memory_fn: Callable[[ModelSpec, object, Layout], MemoryBreakdown] | None = None

    def memory(self, layout: Layout) -> MemoryBreakdown:
        if layout not in self._cache:
            if self._memory_fn is None:
                from lmforge.plan import memory

                self._memory_fn = memory.training_memory if self.training else memory.inference_memory
            self._cache[layout] = self._memory_fn(self.spec, self.setup, layout)
        return self._cache[layout]

    # -- candidate families ------------------------------------------------------------------------

    def _shapes(self, accelerator: Accelerator, request: LayoutRequest) -> list[Layout]:
        """Every (TP, PP, ZeRO, offload) shape with DP = 1; the search then widens DP."""
        tps = [request.tp] if request.tp else valid_tp_degrees(self.spec, accelerator.gpus_per_node)
        pps = [request.pp] if request.pp else pipeline_degrees(self.spec.num_layers)
        if not self.training:
            return [Layout(tp=tp, pp=pp) for tp in tps for pp in pps]
        offload_optimizer = request.offload in ("optimizer", "both")
        offload_params = request.offload in ("params", "both")
        long_sequence = self.setup.seq_len > LONG_SEQUENCE_TOKENS
        shapes = []
        for tp in tps:
            for pp in pps:
                zeros = [request.zero_stage] if request.zero_stage is not None else [0, 1, 2, 3]
                for zero in zeros:
                    if pp > 1 and zero >= 2:
                        continue  # DeepSpeed's PipelineEngine asserts ZeRO < 2
                    if offload_params and zero < 3 or offload_optimizer and zero == 0:
                        continue
                    shapes.append(
                        Layout(
                            tp=tp,
                            pp=pp,
                            zero_stage=zero,
                            offload_optimizer=offload_optimizer,
                            offload_params=offload_params,
                            sequence_parallel=long_sequence and tp > 1,
                        )
                    )
        return shapes

    def _strategy(self) -> tuple[str, Callable[[Layout], bool], Callable[[Layout], tuple]]:
        """(name, family filter, preference key) from seed 003 §4 for this model and setup."""
        if self.training and self.setup.seq_len > LONG_SEQUENCE_TOKENS:
            return "long-sequence", lambda l: l.tp > 1, lambda l: (-l.tp, l.pp, _ZERO_PREFERENCE[l.zero_stage])
        if self.params_total > THREE_D_ABOVE_PARAMS:
            return "3d", lambda l: l.tp > 1 and l.zero_stage <= 1, lambda l: (-l.tp, l.pp, _ZERO_PREFERENCE[l.zero_stage])
        return "data-parallel", lambda l: True, lambda l: (l.pp, l.tp, _ZERO_PREFERENCE[l.zero_stage])

    # -- search ------------------------------------------------------------------------------------

    def _fits(self, layout: Layout, usable_bytes: int) -> bool:
        return self.memory(layout).total_bytes <= usable_bytes

    def _min_dp(self, shape: Layout, usable_bytes: int, max_gpus: int) -> int | None:
        """Smallest DP at which `shape` fits (per-GPU memory never grows with DP): one check at the
        bound rules most shapes out; for the rest, doubling from 1 then bisecting finds small answers
        in a few checks."""
        max_dp = max_gpus // (shape.tp * shape.pp)
        if not self.training or shape.zero_stage == 0:
            max_dp = min(max_dp, 1)  # without sharding, more replicas hold no less each
        if max_dp < 1 or not self._fits(replace(shape, dp=max_dp), usable_bytes):
            return None
        high = 1
        while high < max_dp and not self._fits(replace(shape, dp=high), usable_bytes):
            high *= 2
        low, high = high // 2 + 1, min(high, max_dp)
        while low < high:
            middle = (low + high) // 2
            if self._fits(replace(shape, dp=middle), usable_bytes):
                high = middle
            else:
                low = middle + 1
        return low

    def best(
        self,
        accelerator: Accelerator,
        request: LayoutRequest = LayoutRequest(),
        *,
        headroom: float = DEFAULT_HEADROOM,
        max_gpus: int = MAX_GPUS,
    ) -> LayoutChoice:
        """The recommended layout on `accelerator`: fewest GPUs that fit, then the strategy table's choice."""
        if not 0 <= headroom < 1:
            raise UserInputError(f"headroom must be in [0, 1), got {headroom}")
        validate_request(self.spec, request, accelerator, self.training)
        usable = int(accelerator.memory_bytes * (1 - headroom))
        shapes = self._shapes(accelerator, request)
        strategy, in_family, preference = self._strategy()
        if request.gpus is not None:
            return self._best_at(request.gpus, shapes, usable, strategy, in_family, preference, accelerator, request)
        key = (usable, accelerator.gpus_per_node, request, max_gpus)
        if key not in self._found:  # cards of the same size get the same answer
            self._found[key] = self._fewest(shapes, usable, in_family, preference, request, max_gpus)
        chosen, fits, in_strategy = self._found[key]
        if fits:
            name = strategy if in_strategy else "fallback"
            return LayoutChoice(chosen, self.memory(chosen), usable, True, _reason(name, chosen, self, accelerator, request))
        return LayoutChoice(
            chosen,
            self.memory(chosen),
            usable,
            False,
            f"does not fit on up to {max_gpus} × {accelerator.name}: even {_describe(chosen)} needs "
            f"{self.memory(chosen).total_bytes / GIB:.1f} GiB per GPU of {usable / GIB:.1f} GiB usable",
        )

    def best_for_each(
        self, accelerators: list[Accelerator], request: LayoutRequest = LayoutRequest(), *, headroom: float = DEFAULT_HEADROOM
    ) -> dict[str, LayoutChoice | UserInputError]:
        """`best` for many cards, smallest memory first: what fits a smaller card fits a bigger one with
        the same node size, so each answer bounds the next search (fewer layouts to price)."""
        results: dict[str, LayoutChoice | UserInputError] = {}
        bounds: dict[int, int] = {}  # gpus_per_node -> fewest GPUs found so far
        for card in sorted(accelerators, key=lambda a: a.memory_bytes):
            try:
                choice = self.best(card, request, headroom=headroom, max_gpus=bounds.get(card.gpus_per_node, MAX_GPUS))
            except UserInputError as error:  # e.g. --tp 8 on a card whose node holds fewer GPUs
                results[card.name] = error
                continue
            if choice.fits:
                bounds[card.gpus_per_node] = choice.gpus
            results[card.name] = choice
        return results

    def _fewest(
        self,
        shapes: list[Layout],
        usable: int,
        in_family: Callable[[Layout], bool],
        preference: Callable[[Layout], tuple],
        request: LayoutRequest,
        max_gpus: int,
    ) -> tuple[Layout, bool, bool]:
        """(layout, fits, whether it is in the strategy's family): one GPU if it suffices, else the
        strategy's family first, then any shape."""
        single = [s for s in shapes if s.tp * s.pp == 1 and self._fits(s, usable)]
        if single:
            return min(single, key=preference), True, True
        family = [s for s in shapes if in_family(s)]
        for candidates in (family, shapes):
            # Most-sharded shapes first: they set a low GPU bound early, so most others need one check.
            bound, fitting = max_gpus, []
            for shape in sorted(candidates, key=lambda s: (-s.zero_stage, s.tp * s.pp)):
                dp = self._min_dp(shape, usable, bound)
                if dp is not None:
                    fitting.append((dp * shape.tp * shape.pp, shape))
                    bound = min(bound, dp * shape.tp * shape.pp)
            if fitting:
                at_min = [_with_dp(s, bound) for n, s in fitting if n == bound]
                chosen = min(at_min, key=preference)
                return chosen, True, in_family(chosen)
        widest = [replace(s, dp=max(max_gpus // (s.tp * s.pp), 1)) for s in shapes]
        return min(widest, key=lambda l: self.memory(l).total_bytes), False, False

    def _best_at(
        self,
        gpus: int,
        shapes: Iterable[Layout],
        usable: int,
        strategy: str,
        in_family: Callable[[Layout], bool],
        preference: Callable[[Layout], tuple],
        accelerator: Accelerator,
        request: LayoutRequest,
    ) -> LayoutChoice:
        candidates = [_with_dp(s, gpus) for s in shapes if gpus % (s.tp * s.pp) == 0]
        if not self.training:
            candidates = [c for c in candidates if c.dp == 1]
        if not candidates:
            raise UserInputError(
                f"no valid layout uses exactly {gpus} GPUs for {self.spec.name}: "
                + ("inference uses TP × PP = GPUs, " if not self.training else "")
                + f"TP must be in {valid_tp_degrees(self.spec, accelerator.gpus_per_node)} and PP in "
                f"{pipeline_degrees(self.spec.num_layers)} (or give --pp)"
            )
        fitting = [c for c in candidates if self._fits(c, usable)]
        if fitting:
            preferred = [c for c in fitting if in_family(c)] or fitting
            chosen = min(preferred, key=preference)
            name = strategy if in_family(chosen) else "fallback"
            return LayoutChoice(chosen, self.memory(chosen), usable, True, _reason(name, chosen, self, accelerator, request))
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
    if layout.zero_stage:
        parts.append(f"ZeRO-{layout.zero_stage}" + (" on one rank (DeepSpeed mixed precision, nothing sharded)" if layout.dp == 1 else ""))
    if layout.offload_optimizer or layout.offload_params:
        what = " + ".join(w for w, on in (("optimizer", layout.offload_optimizer), ("params", layout.offload_params)) if on)
        parts.append(f"offload {what}")
    if layout.sequence_parallel:
        parts.append("sequence parallel")
    return ", ".join(parts)


def _reason(strategy: str, layout: Layout, search: LayoutSearch, accelerator: Accelerator, request: LayoutRequest) -> str:
    """One line: what the strategy table says and what was picked (or that the user's choice fits)."""
    shape = _describe(layout)
    fixed = [
        text
        for text, given in (
            (f"ZeRO-{request.zero_stage}", request.zero_stage is not None),
            (f"TP {request.tp}", request.tp is not None),
            (f"PP {request.pp}", request.pp is not None),
            (f"offload {request.offload}", request.offload != "none"),
        )
        if given
    ]
    if fixed:
        return f"fits with the {', '.join(fixed)} you chose on {layout.gpus} × {accelerator.name}: {shape}"
    if layout.gpus == 1:
        return f"fits one {accelerator.name}: no parallelism needed ({shape})"
    if not search.training:
        if layout.pp > 1:
            return f"weights + KV cache need {layout.gpus} GPUs: TP {layout.tp} inside the node, PP {layout.pp} across nodes ({shape})"
        return f"weights + KV cache need {layout.gpus} GPUs: tensor parallel inside one node ({shape})"
    if strategy == "long-sequence":
        return f"sequences > 32K tokens: tensor + sequence parallel split the activations (seed 003 §4): {shape}"
    if strategy == "3d":
        return f"> 100B parameters: 3D parallel, TP inside the node, PP across nodes, ZeRO for optimizer states (seed 003 §4): {shape}"
    if layout.tp == 1 and layout.pp == 1:
        if layout.zero_stage == 0:
            return f"model states fit every GPU: plain data parallel (DDP) (seed 003 §4): {shape}"
        if layout.zero_stage in (1, 2):
            return f"small enough for data parallel; ZeRO-{layout.zero_stage} shards optimizer states at DDP's traffic (seed 003 §4): {shape}"
        return f"does not fit one GPU: ZeRO-3 shards weights too, tried before model parallelism (seed 003 §4): {shape}"
    return f"ZeRO alone does not fit: model parallelism added (seed 003 §4): {shape}"

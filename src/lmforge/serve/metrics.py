"""Prometheus metrics in the text exposition format (https://prometheus.io/docs/instrumenting/exposition_formats/).

Written by hand (counters, gauges, cumulative histograms) to keep the server free of another dependency.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.serve.engine import Engine

_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            label = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{label}"}} {running}')
        return out + [f"{name}_sum {self.total}", f"{name}_count {running}"]


class Metrics:
    """The server's counters and histograms; `render` adds the engine's live gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latency = _Histogram(_LATENCY_BUCKETS_S)
        self.ttft = _Histogram(_LATENCY_BUCKETS_S)

    def record_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def record_generation(
        self, prompt_tokens: int, completion_tokens: int, latency_s: float, ttft_s: float | None
    ) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.latency.observe(latency_s)
            if ttft_s is not None:
                self.ttft.observe(ttft_s)

    def render(self, engine: Engine) -> str:
        stats = engine.stats
        with self._lock:
            lines = [
                "# HELP lmforge_requests_total HTTP requests answered, by endpoint and status.",
                "# TYPE lmforge_requests_total counter",
            ]
            lines += [
                f'lmforge_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                for (e, s), n in sorted(self.requests.items())
            ]
            lines += [
                "# TYPE lmforge_prompt_tokens_total counter",
                f"lmforge_prompt_tokens_total {self.prompt_tokens}",
                "# TYPE lmforge_generation_tokens_total counter",
                f"lmforge_generation_tokens_total {self.completion_tokens}",
                "# HELP lmforge_request_latency_seconds Time from request to last token.",
                "# TYPE lmforge_request_latency_seconds histogram",
                *self.latency.lines("lmforge_request_latency_seconds"),
                "# HELP lmforge_time_to_first_token_seconds Time from request to first token.",
                "# TYPE lmforge_time_to_first_token_seconds histogram",
                *self.ttft.lines("lmforge_time_to_first_token_seconds"),
            ]
        lines += [
            "# HELP lmforge_queue_depth Requests waiting to join the running batch.",
            "# TYPE lmforge_queue_depth gauge",
            f"lmforge_queue_depth {engine.queue_depth}",
            "# TYPE lmforge_running_sequences gauge",
            f"lmforge_running_sequences {engine.running}",
            "# TYPE lmforge_decode_steps_total counter",
            f"lmforge_decode_steps_total {stats.decode_steps}",
            "# HELP lmforge_batch_sequences_mean Mean sequences per decode step (batching at work).",
            "# TYPE lmforge_batch_sequences_mean gauge",
            f"lmforge_batch_sequences_mean {stats.mean_batch_sequences:.3f}",
        ]
        return "\n".join(lines) + "\n"

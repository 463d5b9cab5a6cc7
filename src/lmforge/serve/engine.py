"""The transformers engine: iteration-level (continuous) batching over a shared KV cache.

One scheduler thread owns the models. Between two decode steps it admits waiting requests: their
prompts are prefilled together (left-padded), then their KV cache is left-padded to the running
batch's length and concatenated to it along the batch dimension, so a new request joins the very
next decode step instead of waiting for the batch to drain (Orca, Yu et al. OSDI'22: iteration-level
scheduling). Finished, cancelled or timed-out rows are dropped from the cache with an index select,
and cache columns that have become padding for every row are trimmed away.

Positions come from the attention mask (cumsum - 1, as transformers' generate does for left padding),
so a row's padding never shifts its rotary positions. Each sequence samples with its own
transformers logits processors (lmforge.generate.sampling) and its own torch.Generator, so a seed
reproduces whatever else shares the batch.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import LmforgeError, NotFoundError
from lmforge.generate.generation import find_stop, held_back_chars
from lmforge.generate.load import LoadedModel
from lmforge.generate.sampling import SamplingParams


class QueueFullError(LmforgeError):
    """The engine's waiting queue is full: the client should retry later (HTTP 429)."""


class EngineDeadError(LmforgeError):
    """The engine thread ended on an unexpected error: nothing more can be generated (HTTP 503; `lmforge serve`
    exits non-zero so a supervisor restarts it)."""

    exit_code = 1


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float, list[int]]] = field(default_factory=list)  # (token, logprob, its bytes)
    bytes: list[int] = field(default_factory=list)  # the token's own bytes (a partial UTF-8 character stays partial)


@dataclass
class Event:
    """What the engine reports to a request: a piece of final text (maybe empty while held back),
    or the end of the sequence (finish_reason set)."""

    text: str = ""
    token_id: int | None = None
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None  # "stop" | "length" | "timeout" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Request:
    """One sequence to generate. `on_event` is called from the engine thread."""

    model: str
    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable[[Event], None]
    logprobs: int | None = None  # None: none; k: the chosen token's logprob plus the top k
    timeout_s: float | None = None
    cancelled: bool = False
    deadline: float | None = None  # monotonic seconds; set by Engine.submit from timeout_s
    ignore_eos: bool = False

    def cancel(self) -> None:
        """Ask the engine to stop this sequence at its next step (a client went away)."""
        self.cancelled = True


@dataclass
class EngineStats:
    decode_steps: int = 0
    decoded_tokens: int = 0  # sequences x steps: mean batch = decoded_tokens / decode_steps
    max_batch_sequences: int = 0
    prefilled_tokens: int = 0
    finished: int = 0

    @property
    def mean_batch_sequences(self) -> float:
        return self.decoded_tokens / self.decode_steps if self.decode_steps else 0.0


class _Sequence:
    def __init__(self, request: Request, loaded: LoadedModel, stop_ids: set[int]):
        import torch

        self.request = request
        self.loaded = loaded
        self.stop_ids = stop_ids
        self.generated: list[int] = []
        self.text = ""  # the generated text so far, without a trailing incomplete UTF-8 character
        self.emitted_chars = 0
        self.processors = request.params.logits_processors(prompt_length=len(request.prompt_ids))
        # Without processors (OpenAI's defaults: temperature 1, top_p 1), a row's token comes from ops run once
        # over the batch (_choose_each): its argmax when greedy, else its row of one batched softmax.
        self.plain = not len(self.processors)
        self.generator = torch.Generator()
        seed = request.params.seed
        try:
            self.generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "big"))
        except (RuntimeError, ValueError, OverflowError) as error:  # torch takes [-2**63, 2**64)
            raise ValueError(f"seed {seed} is outside the range torch accepts: {error}") from None
        self._stream = _decode_stream(loaded.tokenizer)
        self.deadline = request.deadline
        self.done = False

    def sample(self, logits: Any) -> int:
        """The next token from this row's raw logits, through its own processors and generator."""
        import torch

        scores = logits
        if len(self.processors):  # the penalties need every token so far
            ids = torch.tensor([self.request.prompt_ids + self.generated])
            scores = self.processors(ids, logits[None].clone())[0]
        if self.request.params.is_greedy:
            if bool(torch.isnan(scores).any()):
                raise ValueError("the sampling parameters give no valid distribution (NaN scores)")
            return int(torch.argmax(scores))
        probs = torch.softmax(scores.float(), dim=-1)
        # Checked here, not left to multinomial: on CUDA an invalid row is a device assert that ends the process.
        if not bool(torch.isfinite(probs).all()) or not float(probs.sum()) > 0:
            raise ValueError(
                "the sampling parameters give no valid distribution (inf or NaN after the penalties and temperature)"
            )
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def accept(self, token: int, logits: Any) -> None:
        """Record the chosen token and report what it adds (text, logprob, or the end)."""
        logprob = self._logprob(logits, token) if self.request.logprobs is not None else None
        self.generated.append(token)
        self._report(token, logprob)

    def _logprob(self, logits: Any, token: int) -> TokenLogprob:
        import torch

        # OpenAI's logprobs are the model's own distribution, before sampling filters (vLLM does the same).
        logp = torch.log_softmax(logits.float(), dim=-1)
        tokenizer = self.loaded.tokenizer
        top: list[tuple[str, float, list[int]]] = []
        if self.request.logprobs:
            values, indices = torch.topk(logp, self.request.logprobs)
            top = [
                (tokenizer.decode([int(i)]), float(v), token_bytes(tokenizer, int(i))) for v, i in zip(values, indices)
            ]
        return TokenLogprob(tokenizer.decode([token]), float(logp[token]), top, token_bytes(tokenizer, token))

    def _extend_text(self, token: int) -> None:
        """Add `token`'s text: incrementally where the tokenizer allows it (tokenizers' DecodeStream, one step per
        token instead of decoding every token so far again), else by decoding the whole reply."""
        if self._stream is not None:
            stream, backend = self._stream
            piece = stream.step(backend, token)
            if piece:
                self.text += piece
            return
        self.text = self.loaded.tokenizer.decode(self.generated, skip_special_tokens=True).rstrip("\ufffd")

    def _report(self, token: int, logprob: TokenLogprob | None) -> None:
        params = self.request.params
        if token in self.stop_ids:  # what was held back (a possible stop-string start) is final now
            # The end-of-turn token is not in the text, so it has no logprob entry either (as OpenAI's replies).
            self._finish("stop", None, self.text, token=token)
            return
        self._extend_text(token)
        text = self.text
        cut = find_stop(text, params.stop)
        if cut is not None:
            self._finish("stop", logprob, text[:cut], token=token)
            return
        if len(self.generated) >= params.max_new_tokens:
            self._finish("length", logprob, text, token=token)
            return
        safe = len(text) - held_back_chars(text, params.stop) if params.stop else len(text)
        self.request.on_event(Event(text=self._take(text, safe), token_id=token, logprob=logprob))

    def _take(self, text: str, upto: int) -> str:
        piece = text[self.emitted_chars : upto] if upto > self.emitted_chars else ""
        self.emitted_chars = max(self.emitted_chars, upto)
        return piece

    def fail(self, error: BaseException, prefix: str = "generation failed") -> None:
        """End this sequence alone with `error` (a failure in its own sampling, or in a step it shared)."""
        self._finish("error", error=f"{prefix}: {_describe(error)}")

    def _finish(
        self,
        reason: str,
        logprob: TokenLogprob | None = None,
        text: str | None = None,
        error: str | None = None,
        token: int | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        piece = self._take(text, len(text)) if text is not None else ""
        self.request.on_event(
            Event(
                text=piece,
                token_id=token,
                logprob=logprob,
                finish_reason=reason,
                error=error,
                prompt_tokens=len(self.request.prompt_ids),
                completion_tokens=len(self.generated),
            )
        )


def token_bytes(tokenizer: Any, token_id: int) -> list[int]:
    """The bytes a token stands for, as OpenAI's logprob `bytes` (a token holding half a UTF-8 character gives
    that half, not the replacement character's bytes): a byte-level BPE token (GPT-2, Llama 3, Qwen) maps its
    characters back through the byte-to-unicode table, a byte-fallback token (<0xE2>, Llama 2, Mistral) is its byte,
    a SentencePiece piece turns its '▁' into a space; any other token is its decoded text."""
    kind, table = _token_encoding(tokenizer)
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if isinstance(piece, str) and token_id not in tokenizer.all_special_ids:
        if kind == "byte_level" and all(char in table for char in piece):
            return [table[char] for char in piece]
        if kind == "sentencepiece":
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                return [int(piece[3:5], 16)]
            return list(piece.replace("\u2581", " ").encode("utf-8"))
    return list(tokenizer.decode([token_id]).encode("utf-8", "backslashreplace"))


@functools.lru_cache(maxsize=16)
def _token_encoding(tokenizer: Any) -> tuple[str, dict[str, int]]:
    """How `tokenizer`'s token strings encode bytes, read from its decoder (tokenizers' JSON), once per tokenizer."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = json.loads(backend.to_str()).get("decoder") if backend is not None else None
    kinds: set[str] = set()
    for part in (decoder or {}).get("decoders", [decoder] if decoder else []):
        kinds.add(part.get("type", ""))
    if "ByteLevel" in kinds:
        return "byte_level", {char: byte for byte, char in bytes_to_unicode().items()}
    if "ByteFallback" in kinds or "Metaspace" in kinds or "Replace" in kinds:
        return "sentencepiece", {}
    return "text", {}


def _adapter_rows(model: Any, sequences: list[_Sequence]) -> dict[str, Any]:
    """Forward arguments selecting each row's adapter on a shared multi-adapter model (generate.load.attach_adapter):
    peft's mixed-batch inference (`adapter_names`, "__base__" for adapters off) applies each row's LoRA to that
    row alone, so requests for several adapters share one forward. A plain model needs nothing."""
    peft = sys.modules.get("peft")  # not imported: the model cannot be a PeftModel
    if peft is None or not isinstance(model, peft.PeftModel):
        return {}
    return {"adapter_names": [seq.loaded.lora_name or "__base__" for seq in sequences]}


class _Batch:
    """The running sequences of one model with their shared, left-padded KV cache. With mixed adapters, the rows of
    every name served by one multi-adapter model share the batch, each with its own adapter (`_adapter_rows`)."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded  # the first name's; every row also carries its own (tokenizer, stop ids, adapter)
        self.sequences: list[_Sequence] = []
        self.cache: Any = None
        self.mask: Any = None  # [B, cached columns]: 1 = real token
        self.next_tokens: list[int] = []  # each row's last chosen token, not yet in the cache

    def admit(self, new: list[_Sequence], stats: EngineStats) -> None:
        """Prefill `new` together and merge them into the running batch."""
        import torch
        from transformers import DynamicCache

        pad = self.loaded.tokenizer.pad_token_id or 0
        width = max(len(s.request.prompt_ids) for s in new)
        ids = torch.full((len(new), width), pad, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for row, seq in enumerate(new):
            prompt = seq.request.prompt_ids
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Plain full-attention layers (no config): left-padded merges and trims need every layer's whole length.
        cache = DynamicCache()
        output = self.loaded.model(
            input_ids=ids.to(self.loaded.device),
            attention_mask=mask.to(self.loaded.device),
            position_ids=positions.to(self.loaded.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **_adapter_rows(self.loaded.model, new),
        )
        stats.prefilled_tokens += int(mask.sum())
        logits = output.logits[:, -1, :].float().cpu()
        self._merge(output.cache, mask, new, _choose_each(new, logits))

    def _merge(self, cache: Any, mask: Any, new: list[_Sequence], tokens: list[int]) -> None:
        import torch
        from transformers import DynamicCache

        if self.cache is None:
            self.cache, self.mask, self.sequences, self.next_tokens = cache, mask, list(new), tokens
            return
        width = max(self.mask.shape[1], mask.shape[1])

        def left_pad(tensor: Any, dim: int) -> Any:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=dim)

        layers = [
            (
                torch.cat([left_pad(old.keys, 2), left_pad(add.keys, 2)]),
                torch.cat([left_pad(old.values, 2), left_pad(add.values, 2)]),
            )
            for old, add in zip(self.cache.layers, cache.layers)
        ]
        self.cache = DynamicCache(ddp_cache_data=layers)
        self.mask = torch.cat([left_pad(self.mask, 1), left_pad(mask, 1)])
        self.sequences += new
        self.next_tokens += tokens

    def decode(self, stats: EngineStats) -> None:
        """One decode step for every running row."""
        import torch

        device = self.loaded.device
        ids = torch.tensor(self.next_tokens, dtype=torch.long)[:, None]
        positions = self.mask.sum(-1, keepdim=True)  # this token's position = real tokens before it
        self.mask = torch.cat([self.mask, torch.ones((len(self.sequences), 1), dtype=torch.long)], dim=1)
        output = self.loaded.model(
            input_ids=ids.to(device),
            attention_mask=self.mask.to(device),
            position_ids=positions.to(device),
            cache=self.cache,
            use_cache=True,
            **_adapter_rows(self.loaded.model, self.sequences),
        )
        self.cache = output.cache
        stats.decode_steps += 1
        stats.decoded_tokens += len(self.sequences)
        stats.max_batch_sequences = max(stats.max_batch_sequences, len(self.sequences))
        self.next_tokens = _choose_each(self.sequences, output.logits[:, -1, :].float().cpu())

    def drop_finished(self, now: float) -> int:
        """Remove done, cancelled and timed-out rows; returns how many left."""
        import torch

        for seq in self.sequences:
            if seq.request.cancelled:
                seq.done = True
            elif seq.deadline is not None and now > seq.deadline:
                seq._finish("timeout", error="the request timed out")
        keep = [row for row, seq in enumerate(self.sequences) if not seq.done]
        if len(keep) == len(self.sequences):
            return 0
        gone = len(self.sequences) - len(keep)
        if not keep:
            self.cache = self.mask = None
            self.sequences, self.next_tokens = [], []
            return gone
        index = torch.tensor(keep)
        self.mask = self.mask[index]
        start = int((self.mask.sum(0) > 0).nonzero()[0])  # columns that are padding in every row
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, start:, :]
            layer.values = layer.values[index.to(layer.values.device), :, start:, :]
        self.sequences = [self.sequences[row] for row in keep]
        self.next_tokens = [self.next_tokens[row] for row in keep]
        return gone


class Engine:
    """Serves one or more loaded models (a base and its LoRA variants, by name) from one scheduler thread.

    `submit` is thread-safe and never blocks: it raises QueueFullError when `max_queue` requests wait.
    `mixed_adapters` (default): names served by one multi-adapter model share one batch and one forward per step;
    off, each name has its own batch and the names take turns every step (benchmarks/serve_mixed_adapters.py
    measures the two).
    """

    def __init__(
        self,
        models: dict[str, LoadedModel],
        *,
        max_batch_size: int = 16,
        max_queue: int = 256,
        mixed_adapters: bool = True,
    ):
        self.models = models  # may be empty: a server that only embeds (lmforge.serve.embed) generates nothing
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.stats = EngineStats()
        self._waiting: deque[Request] = deque()
        # batch key per name: the shared model object (mixed adapters) or the name itself (taking turns)
        self._batch_key = {name: id(loaded.model) if mixed_adapters else name for name, loaded in models.items()}
        self._batches: dict[Any, _Batch] = {}
        for name, loaded in models.items():
            self._batches.setdefault(self._batch_key[name], _Batch(loaded))
        self._stop_ids = {name: set(loaded.stop_token_ids) for name, loaded in models.items()}
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failure: str | None = None  # why the engine thread died, once it has
        # Called from the dying engine thread with the error; `lmforge serve` uses it to exit non-zero.
        self.on_death: Callable[[BaseException], None] | None = None

    @property
    def alive(self) -> bool:
        """False once the engine thread has died on an unexpected error (a graceful stop is not a death)."""
        return self.failure is None

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return sum(len(batch.sequences) for batch in self._batches.values())

    def submit(self, request: Request) -> None:
        if request.model not in self.models:
            raise NotFoundError(f"model {request.model!r} is not served here; choose one of {', '.join(self.models)}")
        with self._wake:
            if self.failure is not None:
                raise EngineDeadError(
                    f"the engine has stopped after an internal error ({self.failure}); the server must be restarted"
                )
            if self._stopping:
                raise QueueFullError("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting (--max-queue); retry shortly")
            request.deadline = time.monotonic() + request.timeout_s if request.timeout_s else None
            self._waiting.append(request)
            self._wake.notify()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lmforge-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Finish the requests already admitted or waiting, then end the thread (graceful shutdown)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        """Run the schedule; an error that escapes the per-sequence handling (a bug) must not leave requests
        hanging behind a thread that looks alive: everything waiting or running is answered with the error,
        `failure` records it, later submissions are refused, and `on_death` tells the owner."""
        try:
            self._schedule()
        except BaseException as error:
            with self._wake:
                self.failure = _describe(error)
                waiting, self._waiting = list(self._waiting), deque()
            for request in waiting:
                _answer_error(request, error, "the engine stopped")
            for batch in self._batches.values():
                for seq in batch.sequences:
                    seq.fail(error, "the engine stopped")
                batch.sequences, batch.cache, batch.mask, batch.next_tokens = [], None, None, []
            if self.on_death is not None:
                self.on_death(error)

    def _schedule(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._waiting and not self.running and not self._stopping:
                        self._wake.wait()
                    if self._stopping and not self._waiting and not self.running:
                        return
                    admitted = self._take_waiting()
                for key, batch in self._batches.items():
                    self._step(batch, admitted.get(key, []))

    def _take_waiting(self) -> dict[Any, list[Request]]:
        """The waiting requests that fit their batch now, by batch key (the rest keep waiting, in order)."""
        room = {key: self.max_batch_size - len(batch.sequences) for key, batch in self._batches.items()}
        taken: dict[Any, list[Request]] = {}
        kept: deque[Request] = deque()
        now = time.monotonic()
        while self._waiting:
            request = self._waiting.popleft()
            if request.cancelled:
                continue
            if request.deadline is not None and now > request.deadline:
                request.on_event(
                    Event(
                        finish_reason="timeout",
                        error="the request timed out waiting in the queue",
                        prompt_tokens=len(request.prompt_ids),
                    )
                )
                continue
            key = self._batch_key[request.model]
            if room[key] > 0:
                room[key] -= 1
                taken.setdefault(key, []).append(request)
            else:
                kept.append(request)
        self._waiting = kept
        return taken

    def _step(self, batch: _Batch, requests: list[Request]) -> None:
        """Admit `requests`, then decode one token for every running row. A failure (say, out of memory) ends only
        the sequences it touched: a failed prefill fails its new requests while the running rows go on."""
        new = []
        for request in requests:  # a request whose sequence cannot be built (say, a bad seed) fails alone
            try:
                loaded = self.models[request.model]
                new.append(_Sequence(request, loaded, set() if request.ignore_eos else self._stop_ids[request.model]))
            except Exception as error:
                _answer_error(request, error)
        if new:
            try:
                batch.admit(new, self.stats)
            except Exception as error:
                _fail(new, error)
            self.stats.finished += batch.drop_finished(time.monotonic())
        if batch.sequences:
            try:
                batch.decode(self.stats)
            except Exception as error:
                _fail(batch.sequences, error)
            self.stats.finished += batch.drop_finished(time.monotonic())


def _choose_each(sequences: list[_Sequence], logits: Any) -> list[int]:
    """Each running row's next token; a row whose sampling fails (no valid distribution) ends alone, and its
    placeholder token 0 is never fed: the row leaves the batch before the next step.

    Per-row torch calls were the tiny model's largest cost after the forward itself, so what can be is done once
    over the batch: the argmax, the NaN check, and for plain sampling rows the softmax and, for rows without a
    seed, one multinomial draw (a seeded row draws from its own generator, so its seed reproduces its text
    whatever shares the batch)."""
    import torch

    best = logits.argmax(-1).tolist()
    broken = torch.isnan(logits).any(-1).tolist()
    drawn: dict[int, Any] = {}  # row -> token (int) or its probabilities (seeded rows)
    plain = [
        row
        for row, seq in enumerate(sequences)
        if not seq.done and seq.plain and not seq.request.params.is_greedy and not broken[row]
    ]
    if plain:
        probs = torch.softmax(logits[plain].float(), dim=-1)
        valid = torch.isfinite(probs).all(-1).tolist()  # +inf logits: no distribution (and a device assert on CUDA)
        unseeded = [k for k, row in enumerate(plain) if sequences[row].request.params.seed is None and valid[k]]
        picks = torch.multinomial(probs[unseeded], 1)[:, 0].tolist() if unseeded else []
        drawn = {plain[k]: token for k, token in zip(unseeded, picks)}
        drawn.update({row: probs[k] if valid[k] else None for k, row in enumerate(plain) if row not in drawn})
    tokens = []
    for row, seq in enumerate(sequences):
        token = 0
        if not seq.done:
            try:
                if broken[row]:
                    raise ValueError("the model's logits hold NaN")
                if not seq.plain:
                    token = seq.sample(logits[row])
                elif seq.request.params.is_greedy:
                    token = best[row]
                elif drawn[row] is None:
                    raise ValueError("the model's logits give no valid distribution (infinite values)")
                else:
                    token = (
                        drawn[row]
                        if isinstance(drawn[row], int)
                        else int(torch.multinomial(drawn[row], 1, generator=seq.generator))
                    )
                seq.accept(token, logits[row])
            except Exception as error:
                seq.fail(error)
        tokens.append(token)
    return tokens


def _decode_stream(tokenizer: Any) -> tuple[Any, Any] | None:
    """(tokenizers' DecodeStream, the Rust tokenizer) for incremental detokenizing, when it gives exactly what
    `tokenizer.decode(..., skip_special_tokens=True)` gives: a fast tokenizer without transformers' space clean-up."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return None
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:  # tokenizers < 0.21
        return None
    return DecodeStream(skip_special_tokens=True), backend


def _describe(error: BaseException) -> str:
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}"


def _answer_error(request: Request, error: BaseException, prefix: str = "generation failed") -> None:
    request.on_event(
        Event(finish_reason="error", error=f"{prefix}: {_describe(error)}", prompt_tokens=len(request.prompt_ids))
    )


def _fail(sequences: list[_Sequence], error: Exception) -> None:
    for seq in sequences:
        seq.fail(error)

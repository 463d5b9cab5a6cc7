"""`evaluate_model`: score a model on a dataset, optionally side by side with a second model.

The task follows the data's canonical kind unless forced: chat -> generation (ROUGE, BLEU, exact
match), classification -> classification (accuracy, macro-F1, confusion matrix), preference ->
reward (pairwise accuracy of a reward model), text -> perplexity. Generation is greedy by default
so an evaluation is reproducible; pass sampling params to measure a sampled configuration.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from lmforge.errors import UserInputError
from lmforge.evaluate.metrics import (
    bleu_note,
    bleu_score,
    classification_metrics,
    exact_matches,
    pairwise_accuracy,
    perplexity,
    rouge_scores,
    sentence_bleu,
)
from lmforge.evaluate.report import EvalReport, ExampleRow, decide_outcomes
from lmforge.runtime import no_hub_kernels

if TYPE_CHECKING:
    from lmforge.data.validate import OnError

TASKS = ("generation", "classification", "reward", "perplexity")
_TASK_OF_KIND = {"chat": "generation", "classification": "classification", "preference": "reward", "text": "perplexity"}


class _Trust(TypedDict):
    """The loading gates' overrides, passed through to every runner's model loader."""

    trust_pickle: bool
    trust_remote_code: bool


@dataclass
class _Scored:
    """One model's pass over the data: per-example rows and the summary metrics."""

    name: str
    rows: list[ExampleRow]
    summary: dict[str, Any]
    extra: dict[str, Any]


def evaluate_model(
    model: str,
    data: str,
    *,
    task: str | None = None,
    compare: str | None = None,
    adapter: str | None = None,
    limit: int | None = None,
    split: str | None = None,
    extract: str = "answer",
    params: Any = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: bool = False,
    reading: DataReading | None = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
    quant: str | None = None,
    device_map: str | None = None,
) -> EvalReport:
    """Evaluate `model` on `data` (any lmforge data source, read as `reading` says); `compare` is the baseline
    it is measured against ("base": the model it was fine-tuned from, read from its adapter or run folder).
    The trust_ flags override the loading gates (lmforge.generate.load_model). `quant` (int8, nf4, int4) quantizes
    `model` while loading it, not the baseline: `--quant nf4 --compare MODEL` measures what quantizing costs.
    `device_map` ("auto") spreads a model larger than one GPU over the GPUs (accelerate)."""
    if limit is not None and limit < 1:
        raise UserInputError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}")
    if compare == "base":
        from lmforge.generate.load import base_of

        compare = base_of(model, adapter=adapter)
    records, kind, label_names = load_records(data, split, limit, reading)
    task = task or _TASK_OF_KIND.get(kind)
    if task not in TASKS:
        raise UserInputError(f"no evaluation task for {kind} data; pass --task {' | '.join(TASKS)}")
    _check_kind(task, kind)
    if quant is not None and task not in ("generation", "perplexity"):
        raise UserInputError(f"--quant applies to causal LMs (generation, perplexity), not {task}")
    runners: dict[str, Callable[..., _Scored]] = {
        "generation": _generation,
        "classification": _classification,
        "reward": _reward,
        "perplexity": _perplexity,
    }
    runner = runners[task]
    options = {
        "extract": extract,
        "params": params,
        "device": device,
        "label_names": label_names,
        "batch_size": batch_size,
        "device_map": device_map,
        "trust": _Trust(trust_pickle=trust_pickle, trust_remote_code=trust_remote_code),
    }
    with _progress(progress, len(records) * (2 if compare else 1)) as advance:
        main = runner(model, records, adapter=adapter, advance=advance, quant=quant, **options)
        baseline = runner(compare, records, adapter=None, advance=advance, **options) if compare else None
    score_name, higher = {
        "generation": ("rougeL", True),
        "classification": ("correct", True),
        "reward": ("correct", True),
        "perplexity": ("nll_per_token", False),
    }[task]
    report = EvalReport(
        model=main.name,
        task=task,
        data=data,
        score_name=score_name,
        higher_is_better=higher,
        summary=main.summary,
        rows=main.rows,
        extra=main.extra,
    )
    if task == "generation" and (note := bleu_note([row.reference for row in main.rows])) is not None:
        report.notes.append(note)
    if baseline is not None:
        report.compare_model = baseline.name if baseline.name != main.name else f"{baseline.name} (compare)"
        report.compare_summary = baseline.summary
        for row, other in zip(report.rows, baseline.rows):
            row.compare_prediction, row.compare_score = other.prediction, other.score
        decide_outcomes(report)
    return report


@dataclass(frozen=True)
class DataReading:
    """How to read the evaluation data: the options `lmforge data` takes (--kind, --columns, --on-error,
    --rejects), and for a built-in set the tasks to draw from (--tasks, as a train config's data.tasks)."""

    kind: str | None = None
    columns: str | None = None
    on_error: OnError = "fail"
    rejects_path: str | None = None
    tasks: tuple[str, ...] | None = None


def load_records(
    data: str, split: str | None, limit: int | None, reading: DataReading | None = None
) -> tuple[list[dict[str, Any]], str, list[str] | None]:
    """Canonical records, their kind and label names. A built-in set is generated at the size asked
    for, from its test split by default (problems disjoint from the ones it trains on)."""
    reading = reading or DataReading()
    if data.startswith("builtin:"):
        from lmforge.data.builtin import get_builtin, load_builtin

        if reading.kind or reading.columns:
            raise UserInputError(f"--kind and --columns describe your own files; {data} is already canonical")
        spec = get_builtin(data)
        dataset = load_builtin(data, n=limit, split=split or "test", tasks=reading.tasks)
        label = dataset.features.get("label")
        names = list(label.names) if hasattr(label, "names") else None
        return [dict(row) for row in dataset], spec.kind, names
    if reading.tasks:
        raise UserInputError(f"--tasks narrows a builtin: set; {data} is not one")
    from lmforge.data.load import load_data

    loaded = load_data(
        data,
        split=split,
        kind=reading.kind,
        columns=reading.columns,
        on_error=reading.on_error,
        rejects_path=reading.rejects_path,
    )
    dataset = loaded.dataset
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    records = [dict(row) for row in dataset]
    if not records:
        raise UserInputError(f"{data} holds no examples to evaluate")
    return records, loaded.kind.value, loaded.label_names


def _check_kind(task: str, kind: str) -> None:
    needs = {
        "generation": ("chat",),
        "classification": ("classification",),
        "reward": ("preference",),
        "perplexity": ("text", "chat"),
    }[task]
    if kind not in needs:
        raise UserInputError(f"--task {task} needs {' or '.join(needs)} data, but this data is {kind}")


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("evaluating", total=total)
        yield lambda: bar.advance(task)


def _last(messages: list[dict[str, str]], role: str) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == role), "")


def _generation(
    model: str,
    records: list[dict[str, Any]],
    *,
    adapter: str | None,
    advance: Callable[[], None],
    extract: str,
    params: Any,
    device: str | None,
    batch_size: int,
    trust: _Trust,
    quant: str | None = None,
    device_map: str | None = None,
    **_: Any,
) -> _Scored:
    """Generate an answer per example, `batch_size` prompts at a time (similar lengths together).

    An example too long for the context is reported in its row, counted as `skipped` and left out of
    the metrics, rather than ending an evaluation hours in.
    """
    from lmforge.data.builtin import prompt_messages
    from lmforge.generate.generation import encode_prompt, generate_batch
    from lmforge.generate.load import load_model
    from lmforge.generate.sampling import SamplingParams

    loaded = load_model(model, adapter=adapter, device=device, **trust, quant=quant, device_map=device_map)
    params = params or SamplingParams(temperature=0, max_new_tokens=128)
    rows, pending = [], []
    for index, record in enumerate(records):
        prompt = prompt_messages(record)
        row = ExampleRow(
            index=index,
            instruction=_last(prompt, "user"),
            reference=record["messages"][-1]["content"],
            prediction="",
            score=None,
        )
        rows.append(row)
        tokens = len(encode_prompt(loaded, prompt))
        if tokens + params.max_new_tokens > loaded.context_length:
            row.prediction = (
                f"[not run: prompt ({tokens} tokens) plus max_new_tokens ({params.max_new_tokens}) "
                f"exceeds the model's context length of {loaded.context_length} tokens]"
            )
            advance()
        else:
            pending.append((tokens, row, prompt))
    if not pending:
        raise UserInputError(
            f"no example fits {loaded.name}'s context of {loaded.context_length} tokens "
            f"with max_new_tokens {params.max_new_tokens}"
        )
    pending.sort(key=lambda item: item[0])  # less padding per batch
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        for (_tokens, row, _prompt), result in zip(chunk, generate_batch(loaded, [p for _, _, p in chunk], params)):
            row.prediction = result.text
            advance()
    scored = [row for _, row, _ in sorted(pending, key=lambda item: item[1].index)]
    predictions, references = [r.prediction for r in scored], [r.reference for r in scored]
    rouge = rouge_scores(predictions, references)
    matches = exact_matches(predictions, references, extract)
    for row, scores, match in zip(scored, rouge, matches):
        row.score = scores["rougeL"]
        row.details = {**scores, "exact_match": match, "bleu": sentence_bleu(row.prediction, row.reference)}
    summary: dict[str, Any] = {
        name: sum(s[name] for s in rouge) / len(rouge) for name in ("rouge1", "rouge2", "rougeL")
    }
    summary["bleu"] = bleu_score(predictions, references)
    summary["exact_match"] = sum(matches) / len(matches)
    summary["examples"] = len(scored)
    summary["skipped"] = len(rows) - len(scored)
    return _Scored(
        loaded.name, rows, summary, {"extract": extract, "sampling": params.model_dump(), "batch_size": batch_size}
    )


def _perplexity(
    model: str,
    records: list[dict[str, Any]],
    *,
    adapter: str | None,
    advance: Callable[[], None],
    device: str | None,
    trust: _Trust,
    quant: str | None = None,
    device_map: str | None = None,
    **_: Any,
) -> _Scored:
    """Text: every token. Chat: the assistant's tokens only, the ones a fine-tune trains on."""
    from lmforge.data.templates import ChatTemplate
    from lmforge.data.tokenize import encode_chat
    from lmforge.generate.load import load_model

    loaded = load_model(model, adapter=adapter, device=device, **trust, quant=quant, device_map=device_map)
    template = ChatTemplate(loaded.chat_template_source, loaded.chat_template, loaded.chat_template_source)
    examples, instructions, truncated = [], [], 0
    for record in records:
        if "messages" in record:
            encoded = encode_chat(record["messages"], loaded.tokenizer, template, max_len=loaded.context_length)
            examples.append((encoded["input_ids"], encoded["labels"]))
            instructions.append(_last(record["messages"], "user"))
            truncated += encoded["_dropped_tokens"] > 0
        else:
            ids = loaded.tokenizer(record["text"])["input_ids"]
            truncated += len(ids) > loaded.context_length
            ids = ids[: loaded.context_length]  # the model cannot see past its context
            examples.append((ids, list(ids)))
            instructions.append(record["text"])
    result = perplexity(loaded.model, examples, on_example=advance)
    rows = [
        ExampleRow(
            index=i,
            instruction=text,
            reference="",
            prediction="",
            score=None if math.isnan(nll) else nll,
            details={"perplexity": math.exp(nll) if not math.isnan(nll) else None},
        )
        for i, (text, nll) in enumerate(zip(instructions, result.per_example_nll))
    ]
    summary = {
        "perplexity": result.perplexity,
        "nll_per_token": result.nll_per_token,
        "tokens": result.tokens,
        "examples": len(rows),
        "truncated": truncated,
    }
    return _Scored(loaded.name, rows, summary, {})


def load_classifier(
    model: str,
    device: str | None = None,
    *,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> tuple[Any, Any, str]:
    """A sequence-classification model (classifier or reward model) and its tokenizer, pickles scanned;
    `device_map` ("auto") lets accelerate place it over the GPUs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lmforge.files.safe_load import check_model_folder
    from lmforge.generate.load import check_device_map
    from lmforge.hub.reference import locate_model

    check_device_map(device_map, device)
    ref = locate_model(model, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    folder = ref.path
    if ref.is_adapter:
        raise UserInputError(f"{folder} is an adapter; classifier and reward evaluation need a merged model folder")
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    no_hub_kernels()
    use_safetensors = check_model_folder(folder, trust_pickle=trust_pickle)
    placement: dict[str, Any] = {"device_map": device_map} if device_map else {}
    network = AutoModelForSequenceClassification.from_pretrained(
        folder, use_safetensors=use_safetensors, trust_remote_code=trust_remote_code, **placement
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    network.config.pad_token_id = tokenizer.pad_token_id
    if device_map is None:  # else accelerate has placed it (inputs go to network.device, its first layer's)
        network.to(target)
    return network.eval(), tokenizer, ref.name


def _scores(
    network: Any,
    tokenizer: Any,
    texts: list[str],
    pairs: list[str | None] | None,
    advance: Callable[[], None],
    batch_size: int,
) -> Any:
    """Logits for every text (and its pair), in batches."""
    import torch

    outputs = []
    limit = min(getattr(tokenizer, "model_max_length", 512), 100_000)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            second = pairs[start : start + batch_size] if pairs and any(pairs[start : start + batch_size]) else None
            encoded = tokenizer(batch, second, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            outputs.append(network(**encoded.to(network.device)).logits.float().cpu())
            for _ in batch:
                advance()
    return torch.cat(outputs)


def _label_map(model_labels: dict[int, str], data_labels: list[str]) -> dict[int, int]:
    """Model output index -> dataset label id, by name when the model names its labels like the data."""
    names = [model_labels[i] for i in sorted(model_labels)]
    if set(data_labels) <= set(names):
        return {i: data_labels.index(name) for i, name in enumerate(names) if name in data_labels}
    if len(names) == len(data_labels):
        return dict(enumerate(range(len(data_labels))))
    raise UserInputError(
        f"the model predicts {len(names)} labels ({', '.join(names)}) but the data has {len(data_labels)} "
        f"({', '.join(data_labels)}); evaluate with matching labels"
    )


def _classification(
    model: str,
    records: list[dict[str, Any]],
    *,
    advance: Callable[[], None],
    device: str | None,
    label_names: list[str] | None,
    batch_size: int,
    trust: _Trust,
    device_map: str | None = None,
    **_: Any,
) -> _Scored:
    network, tokenizer, name = load_classifier(model, device, device_map=device_map, **trust)
    labels = label_names or sorted({str(r["label"]) for r in records})
    mapping = _label_map(dict(network.config.id2label), labels)
    logits = _scores(
        network, tokenizer, [r["text"] for r in records], [r.get("text_pair") for r in records], advance, batch_size
    )
    outputs = sorted(mapping)  # only model outputs that name a data label may be predicted
    predicted = [mapping[outputs[int(row[outputs].argmax())]] for row in logits]
    truth = [r["label"] if isinstance(r["label"], int) else labels.index(str(r["label"])) for r in records]
    metrics = classification_metrics(truth, predicted, labels)
    rows = [
        ExampleRow(index=i, instruction=r["text"], reference=labels[t], prediction=labels[p], score=float(t == p))
        for i, (r, t, p) in enumerate(zip(records, truth, predicted))
    ]
    summary = {
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "examples": metrics.count,
        **{f"f1_{label}": value for label, value in metrics.per_class_f1.items()},
    }
    return _Scored(name, rows, summary, {"confusion_matrix": metrics.confusion_matrix, "labels": labels})


def _reward(
    model: str,
    records: list[dict[str, Any]],
    *,
    advance: Callable[[], None],
    device: str | None,
    batch_size: int,
    trust: _Trust,
    device_map: str | None = None,
    **_: Any,
) -> _Scored:
    from lmforge.data.templates import resolve_template

    network, tokenizer, name = load_classifier(model, device, device_map=device_map, **trust)
    if network.config.num_labels != 1:
        raise UserInputError(f"{model} has {network.config.num_labels} outputs; a reward model has one score")
    template = resolve_template(tokenizer)
    chosen = [template.render(tokenizer, r["prompt"] + r["chosen"]) for r in records]
    rejected = [template.render(tokenizer, r["prompt"] + r["rejected"]) for r in records]
    chosen_scores = _scores(network, tokenizer, chosen, None, advance, batch_size)[:, 0].tolist()
    rejected_scores = _scores(network, tokenizer, rejected, None, lambda: None, batch_size)[:, 0].tolist()
    rows = [
        ExampleRow(
            index=i,
            instruction=_last(r["prompt"], "user"),
            reference=_last(r["chosen"], "assistant"),
            prediction=f"chosen {c:.3f} vs rejected {j:.3f}",
            score=float(c > j),
            details={"chosen_score": c, "rejected_score": j, "margin": c - j},
        )
        for i, (r, c, j) in enumerate(zip(records, chosen_scores, rejected_scores))
    ]
    margins = [c - j for c, j in zip(chosen_scores, rejected_scores)]
    summary = {
        "pairwise_accuracy": pairwise_accuracy(chosen_scores, rejected_scores),
        "mean_margin": sum(margins) / len(margins),
        "examples": len(rows),
    }
    return _Scored(name, rows, summary, {})

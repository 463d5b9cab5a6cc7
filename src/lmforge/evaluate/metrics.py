"""Quality metrics: perplexity, ROUGE, BLEU, exact match, classification and reward-model accuracy.

ROUGE comes from Google's rouge-score (the package HF `evaluate` wraps; called directly because
evaluate.load fetches its metric scripts from the hub), BLEU from sacrebleu. Both default to
English-only tokenisation: rouge-score drops every non-ASCII character, so a Chinese answer scores 0
against a correct Chinese reference. Text with CJK characters is tokenised per character here (the
convention of sacrebleu's `zh` tokenizer), so Chinese answers score meaningfully.
Classification metrics are a few lines of counting; no sklearn dependency for them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import UserInputError

# CJK Unified Ideographs (+ extension A), Hiragana/Katakana, Hangul: scored character by character.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_WORD_OR_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[a-z0-9]+")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


class _CjkAwareTokenizer:
    """rouge-score's tokenizer (lower-case, alphanumeric words, Porter stems) plus one token per CJK character."""

    def __init__(self) -> None:
        from rouge_score.tokenizers import DefaultTokenizer

        self._default = DefaultTokenizer(use_stemmer=True)

    def tokenize(self, text: str) -> list[str]:
        if not has_cjk(text):
            return self._default.tokenize(text)
        return _WORD_OR_CJK.findall(text.lower())


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per-example ROUGE-1/2/L F1 (Lin 2004; Google's rouge-score, Porter stemmer on)."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_CjkAwareTokenizer())
    return [
        {name: score.fmeasure for name, score in scorer.score(reference, prediction).items()}
        for prediction, reference in zip(predictions, references)
    ]


def bleu_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100); the `zh` tokenizer when the references hold CJK text."""
    import sacrebleu

    _same_length(predictions, references)
    tokenize = "zh" if any(has_cjk(r) for r in references) else "13a"
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=tokenize).score)


BLEU_MAX_ORDER = 4  # sacrebleu's default: the geometric mean of 1- to 4-gram precisions (Papineni et al. 2002)


def bleu_note(references: Sequence[str]) -> str | None:
    """A warning when the references are too short for BLEU to mean anything: with fewer tokens than its
    4-grams (the built-in arithmetic answers are 1-3 tokens), corpus BLEU rests on a handful of longer
    references or is 0 whatever the model says. None when the median reference has 4 tokens or more."""
    import statistics

    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    if not references:
        return None
    tokenize = Tokenizer13a()
    median = statistics.median(len(tokenize(reference).split()) for reference in references)
    if median >= BLEU_MAX_ORDER:
        return None
    return (
        f"BLEU means nothing here: the references are {median:g} token(s) long (median), shorter than BLEU's "
        f"{BLEU_MAX_ORDER}-grams; read exact match and ROUGE instead"
    )


def sentence_bleu(prediction: str, reference: str) -> float:
    import sacrebleu

    tokenize = "zh" if has_cjk(reference) else "13a"
    return float(sacrebleu.sentence_bleu(prediction, [reference], tokenize=tokenize).score)


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def answer_extractor(spec: str) -> Callable[[str], str]:
    """How to pull the answer out of a reply before exact match.

    `answer` (default): after "the answer is" if present, first line, no trailing punctuation
    (lmforge.data.builtin.extract_answer); `first-line`; `last-number`; `exact` (whole text,
    whitespace and case normalised); `regex:PATTERN` (group 1 if it has one, else the match).
    """
    if spec == "answer":
        from lmforge.data.builtin import extract_answer

        return extract_answer
    if spec == "exact":
        return _normalise
    if spec == "first-line":
        return lambda text: _normalise(next((line for line in text.strip().splitlines() if line.strip()), ""))
    if spec == "last-number":

        def last_number(text: str) -> str:
            numbers = _NUMBER.findall(text)
            return numbers[-1].replace(",", "") if numbers else ""

        return last_number
    if spec.startswith("regex:"):
        try:
            pattern = re.compile(spec[len("regex:") :], re.DOTALL)
        except re.error as error:
            raise UserInputError(f"--extract {spec!r}: invalid regular expression ({error})") from None

        def by_regex(text: str) -> str:
            match = pattern.search(text)
            if match is None:
                return ""
            return _normalise(match.group(1) if pattern.groups else match.group(0))

        return by_regex
    raise UserInputError(f"--extract {spec!r}: choose answer, exact, first-line, last-number or regex:PATTERN")


def exact_matches(predictions: Sequence[str], references: Sequence[str], extract: str = "answer") -> list[bool]:
    """Per example: the extracted prediction equals the extracted reference (an empty extraction never matches)."""
    _same_length(predictions, references)
    extractor = answer_extractor(extract)
    results = []
    for prediction, reference in zip(predictions, references):
        got = extractor(prediction)
        results.append(bool(got) and got == extractor(reference))
    return results


@dataclass
class ClassificationMetrics:
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted label
    labels: list[str]
    count: int


def classification_metrics(
    true_ids: Sequence[int], predicted_ids: Sequence[int], labels: Sequence[str]
) -> ClassificationMetrics:
    """Accuracy, macro-F1 (unweighted mean of per-class F1, a class never seen nor predicted scores 0)
    and the confusion matrix."""
    _same_length(true_ids, predicted_ids)
    if not true_ids:
        raise UserInputError("no examples to score")
    size = len(labels)
    matrix = [[0] * size for _ in range(size)]
    for truth, guess in zip(true_ids, predicted_ids):
        matrix[truth][guess] += 1
    f1 = {}
    for index, name in enumerate(labels):
        true_positive = matrix[index][index]
        predicted = sum(row[index] for row in matrix)
        actual = sum(matrix[index])
        # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + actual)
        f1[name] = 2 * true_positive / (predicted + actual) if predicted + actual else 0.0
    correct = sum(matrix[i][i] for i in range(size))
    return ClassificationMetrics(
        accuracy=correct / len(true_ids),
        macro_f1=sum(f1.values()) / size,
        per_class_f1=f1,
        confusion_matrix=matrix,
        labels=list(labels),
        count=len(true_ids),
    )


def pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> float:
    """Share of pairs where the reward model scores the chosen answer strictly above the rejected one."""
    _same_length(chosen_scores, rejected_scores)
    if not chosen_scores:
        raise UserInputError("no preference pairs to score")
    return sum(c > r for c, r in zip(chosen_scores, rejected_scores)) / len(chosen_scores)


@dataclass
class PerplexityResult:
    perplexity: float
    nll_per_token: float
    tokens: int
    per_example_nll: list[float] = field(default_factory=list)  # mean NLL per scored token, per example


def perplexity(
    model: Any, examples: Sequence[tuple[list[int], list[int]]], *, on_example: Callable[[], None] | None = None
) -> PerplexityResult:
    """exp(total NLL / scored tokens) over `examples` of (input_ids, labels with -100 for unscored).

    Token-weighted over the whole set (the definition HF's perplexity guide uses), not a mean of
    per-example perplexities, so long examples count by their length.
    """
    import torch

    total_nll, total_tokens, per_example = 0.0, 0, []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for input_ids, labels in examples:
            ids = torch.tensor([input_ids], device=device)
            target = torch.tensor([labels], device=device)
            logits = model(input_ids=ids).logits.float()
            # Position t predicts token t+1.
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], target[0, 1:], ignore_index=-100, reduction="sum")
            scored = int((target[0, 1:] != -100).sum())
            if scored:
                total_nll += float(loss)
                total_tokens += scored
                per_example.append(float(loss) / scored)
            else:
                per_example.append(float("nan"))
            if on_example:
                on_example()
    if total_tokens == 0:
        raise UserInputError("no tokens to score for perplexity (every example was empty or fully masked)")
    mean = total_nll / total_tokens
    return PerplexityResult(
        perplexity=math.exp(mean), nll_per_token=mean, tokens=total_tokens, per_example_nll=per_example
    )


def _same_length(first: Sequence[Any], second: Sequence[Any]) -> None:
    if len(first) != len(second):
        raise UserInputError(f"{len(first)} predictions but {len(second)} references")

import math

import pytest
import torch

from lmforge.errors import UserInputError
from lmforge.evaluate.metrics import (
    bleu_score,
    classification_metrics,
    exact_matches,
    pairwise_accuracy,
    perplexity,
    rouge_scores,
)


def test_rouge_against_hand_counts():
    # unigrams: 5 of 6 shared each way -> F1 5/6; bigrams: the cat, on the, the mat = 3 of 5 -> 0.6
    [scores] = rouge_scores(["the cat sat on the mat"], ["the cat is on the mat"])
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(0.6)
    assert scores["rougeL"] == pytest.approx(5 / 6)  # LCS: the cat on the mat


def test_rouge_scores_chinese_text_instead_of_zero():
    """rouge-score alone drops non-ASCII, so a perfect Chinese answer would score 0."""
    [same] = rouge_scores(["中国的首都是北京"], ["中国的首都是北京"])
    [reordered] = rouge_scores(["北京是中国的首都"], ["中国的首都是北京"])
    [other] = rouge_scores(["上海"], ["中国的首都是北京"])
    assert same["rougeL"] == 1.0 and reordered["rouge1"] == 1.0 and reordered["rougeL"] < 1.0
    assert other["rouge1"] == 0.0


def test_bleu_is_100_for_identical_and_0_for_disjoint_text():
    assert bleu_score(["the cat sat on the mat today"], ["the cat sat on the mat today"]) == pytest.approx(100.0)
    assert bleu_score(["completely different words here"], ["the cat sat on the mat"]) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("extract", "prediction", "reference", "match"),
    [
        ("answer", "The answer is 42.", "42", True),
        ("answer", "1, 2, 3.", "1 2 3", True),
        ("last-number", "first 3 then 1,250", "1250", True),
        ("last-number", "no digits", "7", False),
        ("first-line", "Paris\nbecause it is", "paris", True),
        ("exact", "  Paris  ", "paris", True),
        ("exact", "Paris, France", "paris", False),
        ("regex:ANSWER: (\\w+)", "blah ANSWER: yes", "ANSWER: yes", True),
    ],
)
def test_exact_match_with_configurable_extraction(extract, prediction, reference, match):
    assert exact_matches([prediction], [reference], extract) == [match]


def test_bad_extraction_and_mismatched_lengths_are_user_errors():
    with pytest.raises(UserInputError, match="--extract"):
        exact_matches(["a"], ["a"], "vibes")
    with pytest.raises(UserInputError, match="invalid regular expression"):
        exact_matches(["a"], ["a"], "regex:(")
    with pytest.raises(UserInputError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_classification_metrics_against_hand_computation():
    metrics = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert metrics.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics.accuracy == pytest.approx(3 / 5)
    # F1 = 2TP / (predicted + actual): a 2/4, b 4/5, c 0 (never predicted right)
    assert metrics.per_class_f1 == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0})
    assert metrics.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_pairwise_accuracy_counts_only_strict_wins():
    assert pairwise_accuracy([1.0, 0.5, 2.0, 0.0], [0.0, 0.5, 3.0, -1.0]) == 0.5


class _Uniform(torch.nn.Module):
    """Equal logits over the vocabulary: perplexity must be exactly the vocabulary size."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return type("Output", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_perplexity_of_a_uniform_model_is_its_vocabulary_size():
    result = perplexity(_Uniform(50), [([1, 2, 3, 4], [1, 2, 3, 4]), ([5, 6, 7], [-100, -100, 7])])
    assert result.perplexity == pytest.approx(50.0)
    assert result.tokens == 3 + 1  # shifted: 3 predictions, then only the unmasked last token
    assert result.per_example_nll == pytest.approx([math.log(50)] * 2)
    with pytest.raises(UserInputError, match="no tokens"):
        perplexity(_Uniform(5), [([1, 2], [-100, -100])])


def test_bleu_on_references_shorter_than_its_4_grams_is_flagged():
    """The built-in arithmetic answers are 1-3 tokens: corpus BLEU on them measures nothing."""
    from lmforge.evaluate.metrics import bleu_note

    note = bleu_note(["42", "1 2 3", "2000 m"])
    assert note is not None and "2 token(s) long (median)" in note and "exact match" in note
    assert bleu_note(["the quick brown fox jumps", "over the lazy dog today"]) is None

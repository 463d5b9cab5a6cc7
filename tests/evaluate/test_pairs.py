"""Preference pairs from a model's own mistakes: which answers become pairs, and that trainers can read them."""

from __future__ import annotations

import pytest

from lmforge.errors import UserInputError
from lmforge.evaluate.pairs import pairs_from_mistakes, write_pairs
from lmforge.evaluate.report import EvalReport, ExampleRow
from lmforge.evaluate.run import evaluate_model, load_records
from lmforge.generate.sampling import SamplingParams


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _row(index: int, reference: str, prediction: str, exact: bool | None) -> ExampleRow:
    skipped = exact is None
    return ExampleRow(
        index=index,
        instruction="q",
        reference=reference,
        prediction=prediction,
        score=None if skipped else 0.0,
        details={} if skipped else {"exact_match": exact},
    )


def _report(rows: list[ExampleRow], task: str = "generation") -> EvalReport:
    return EvalReport(model="m", task=task, data="d", score_name="rougeL", higher_is_better=True, summary={}, rows=rows)


def test_only_wrong_non_empty_answers_become_pairs(tmp_path):
    records = [
        _chat("What is 2 plus 2?", "4"),
        _chat("Sort 3 1 2.", "1 2 3"),
        _chat("Say 7.", "7"),
        _chat("A very long prompt", "x"),
    ]
    rows = [
        _row(0, "4", "4", True),
        _row(1, "1 2 3", " 3 2 1 \n", False),
        _row(2, "7", "  ", False),
        _row(3, "x", "[not run: too long]", None),
    ]
    mined = pairs_from_mistakes(_report(rows), records)
    assert (mined.answers, mined.mistakes, mined.empty) == (3, 2, 1)
    assert mined.pairs == [
        {
            "prompt": [{"role": "user", "content": "Sort 3 1 2."}],
            "chosen": [{"role": "assistant", "content": "1 2 3"}],
            "rejected": [{"role": "assistant", "content": "3 2 1"}],
        }
    ]
    from lmforge.data.load import load_data

    loaded = load_data(str(write_pairs(mined, tmp_path / "pairs.jsonl")))
    assert loaded.kind.value == "preference" and len(loaded.dataset) == 1


def test_refuses_a_non_generation_report_or_other_data():
    with pytest.raises(UserInputError, match="need a generation evaluation"):
        pairs_from_mistakes(_report([], task="reward"), [])
    with pytest.raises(UserInputError, match="not the same data"):
        pairs_from_mistakes(_report([_row(0, "4", "5", False)]), [])


def test_rejected_answers_are_what_the_model_generated(tiny_llama_dir, chat_file):
    """An untrained model gets every answer wrong; each pair rejects exactly its generated text."""
    report = evaluate_model(str(tiny_llama_dir), str(chat_file), params=SamplingParams(temperature=0, max_new_tokens=4))
    mined = pairs_from_mistakes(report, load_records(str(chat_file), None, None)[0])
    predictions = {row.instruction: row.prediction.strip() for row in report.rows}
    assert mined.mistakes == 2 and len(mined.pairs) + mined.empty == 2
    assert mined.pairs  # at least one non-empty wrong answer, so the check below has something to check
    for pair in mined.pairs:
        assert pair["rejected"][0]["content"] == predictions[pair["prompt"][-1]["content"]]


def test_preference_accuracy_counts_the_pairs_whose_chosen_answer_the_model_finds_likelier(tiny_llama_dir):
    from lmforge.evaluate.pairs import preference_accuracy

    def pair(prompt: str, chosen: str, rejected: str) -> dict:
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }

    pairs = [pair("What is 2 plus 2?", "4", "5 apples"), pair("Sort 3 1 2.", "1 2 3", "3"), pair("Say hi.", "hi", "no")]
    swapped = [pair(p["prompt"][0]["content"], p["rejected"][0]["content"], p["chosen"][0]["content"]) for p in pairs]
    model = str(tiny_llama_dir)
    forward, backward = preference_accuracy(model, pairs), preference_accuracy(model, swapped)
    assert forward is not None and backward is not None
    assert forward + backward == pytest.approx(1.0)  # each pair is won one way round, never both
    assert preference_accuracy(model, [pair("q", "same", "same")]) == 0.0  # a tie is no win
    assert preference_accuracy(model, []) is None

import pytest

from lmforge.errors import UserInputError
from lmforge.evaluate.run import evaluate_model
from lmforge.generate.sampling import SamplingParams

FAST = SamplingParams(temperature=0, max_new_tokens=3)


def test_generation_eval_with_compare_scores_every_example(tiny_llama_dir, chat_file):
    report = evaluate_model(str(tiny_llama_dir), str(chat_file), compare=str(tiny_llama_dir), params=FAST)
    assert report.task == "generation" and len(report.rows) == 2
    assert report.rows[0].instruction == "What is 12 plus 30?" and report.rows[0].reference == "42"
    assert {"rouge1", "rouge2", "rougeL", "bleu", "exact_match"} <= set(report.summary)
    # the same model on both sides with greedy decoding: every example ties
    assert report.outcomes == {"win": 0, "loss": 0, "tie": 2}
    assert report.rows[1].prediction == report.rows[1].compare_prediction
    one_at_a_time = evaluate_model(str(tiny_llama_dir), str(chat_file), params=FAST, batch_size=1)
    assert [r.prediction for r in one_at_a_time.rows] == [r.prediction for r in report.rows]


def test_an_example_too_long_for_the_context_is_skipped_and_counted(tiny_llama_dir, tmp_path):
    import json

    data = tmp_path / "long.jsonl"
    rows = [{"instruction": "word " * 300, "output": "x"}, {"instruction": "Say 5.", "output": "5"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = evaluate_model(str(tiny_llama_dir), str(data), params=FAST)
    assert report.summary["examples"] == 1 and report.summary["skipped"] == 1
    assert report.rows[0].score is None and report.rows[0].prediction.startswith("[not run: prompt (")
    assert report.rows[1].score == report.rows[1].details["rougeL"] and 0 <= report.rows[1].score <= 1


def test_perplexity_eval_on_chat_scores_assistant_tokens_only(tiny_llama_dir, chat_file):
    chat = evaluate_model(str(tiny_llama_dir), str(chat_file), task="perplexity")
    vocab = 384
    assert 1 < chat.summary["perplexity"] < 10 * vocab
    assert chat.summary["tokens"] < 20  # "42<|im_end|>" and "cba<|im_end|>": a handful of tokens, not the prompt
    assert chat.score_name == "nll_per_token" and not chat.higher_is_better
    assert chat.summary["truncated"] == 0


def test_classification_eval_on_the_real_minilm_encoder(minilm_dir, sentiment_file):
    report = evaluate_model(str(minilm_dir), str(sentiment_file))
    assert report.task == "classification"
    matrix = report.extra["confusion_matrix"]
    assert sum(map(sum, matrix)) == 3 and len(matrix) == 2
    assert report.summary["accuracy"] == pytest.approx(sum(r.score for r in report.rows) / 3)
    # a built-in set is generated at the size asked for, from its test split (348 distinct, fewer than its default n)
    builtin = evaluate_model(str(minilm_dir), "builtin:sentiment", limit=4)
    assert builtin.summary["examples"] == 4 and builtin.extra["labels"] == ["negative", "positive"]


def test_reward_eval_reports_pairwise_accuracy(tiny_reward_dir, preference_file):
    report = evaluate_model(str(tiny_reward_dir), str(preference_file))
    assert report.task == "reward"
    assert report.summary["pairwise_accuracy"] in (0.0, 0.5, 1.0)
    assert report.summary["pairwise_accuracy"] == pytest.approx(sum(r.score for r in report.rows) / len(report.rows))
    assert all(r.score == float(r.details["margin"] > 0) for r in report.rows)


def test_task_and_data_kind_must_agree(tiny_llama_dir, sentiment_file):
    with pytest.raises(UserInputError, match="--task generation needs chat data"):
        evaluate_model(str(tiny_llama_dir), str(sentiment_file), task="generation")
    with pytest.raises(UserInputError, match="--limit"):
        evaluate_model(str(tiny_llama_dir), str(sentiment_file), limit=0)


def test_a_causal_lm_cannot_be_scored_as_a_reward_model(tiny_llama_dir, preference_file):
    with pytest.raises(UserInputError, match="a reward model has one score"):
        evaluate_model(str(tiny_llama_dir), str(preference_file))

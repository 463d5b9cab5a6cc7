"""Prepared data (train/prepare.py): RUN/data is built once, balanced books in summary.json, reused while
its fingerprint matches, rebuilt when data or tokenizer change, never used half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.errors import UserInputError
from lmforge.train.prepare import DataSummary, prepare_run

SHORT = [
    {"messages": [{"role": "user", "content": f"Add {i} and 1."}, {"role": "assistant", "content": str(i + 1)}]}
    for i in range(6)
]
LONG_PROMPT = [
    {
        "messages": [
            {"role": "user", "content": "Sort these numbers: " + " ".join(map(str, range(40 + i)))},
            {"role": "assistant", "content": "done"},
        ]
    }
    for i in range(2)
]
LONG_ANSWER = [
    {
        "messages": [
            {"role": "user", "content": "Count up."},
            {"role": "assistant", "content": " ".join(map(str, range(30 + i)))},
        ]
    }
    for i in range(3)
]


@pytest.fixture
def chats(tmp_path: Path) -> Path:
    """6 short chats, 2 whose prompt alone outgrows max_len 32 (nothing left to train on: dropped) and 3
    whose answer is cut (kept, truncated)."""
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in SHORT + LONG_PROMPT + LONG_ANSWER))
    return path


@pytest.fixture
def count_chat_tokenizing(monkeypatch):
    """How many times chat data was tokenized (lmforge.data.tokenize.tokenize_chat calls)."""
    from lmforge.data import tokenize

    calls = []
    original = tokenize.tokenize_chat

    def counted(*args, **kwargs):
        calls.append(kwargs.get("max_len"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tokenize, "tokenize_chat", counted)
    return calls


def _summary(run_dir: Path) -> DataSummary:
    return DataSummary.from_json(json.loads((run_dir / "data" / "summary.json").read_text()))


def test_sft_books_balance_reach_the_card_and_resume_does_not_tokenize(make_config, chats, monkeypatch):
    from lmforge.train.run import run_training

    config = make_config(
        "sft", data={"train": str(chats), "max_examples": None, "max_len": 32}, train={"max_steps": 1, "save_every": 1}
    )
    result = run_training(config, progress=False)

    split = _summary(result.run_dir).splits["train"]
    assert (split.examples_in, split.dropped_examples, split.truncated_examples, split.examples_out) == (11, 2, 5, 9)
    assert split.examples_in == split.examples_out + split.rejected + split.dropped_examples
    assert split.sequences == 9 and 0 < split.trained_tokens < split.tokens <= 9 * 32 and split.dropped_tokens > 0
    card = (result.final_dir / "README.md").read_text()
    assert "9 of 11 examples, 5 truncated at max_len 32, 2 dropped" in card

    from lmforge.data import tokenize

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(tokenize, "tokenize_chat", refuse)
    summary_file = result.run_dir / "data" / "summary.json"
    written = summary_file.stat().st_mtime_ns
    resumed = run_training(
        config.model_copy(update={"train": config.train.model_copy(update={"max_steps": 2})}),
        resume=True,
        progress=False,
    )
    assert resumed.steps == 2 and summary_file.stat().st_mtime_ns == written


def test_changed_max_len_or_tokenizer_rebuilds_and_the_same_config_reuses(
    make_config, chats, tmp_path, tiny_tokenizer, count_chat_tokenizing
):
    config = make_config("sft", data={"train": str(chats), "max_examples": None, "max_len": 32})
    first = prepare_run(config).summary
    assert prepare_run(config).summary.fingerprint == first.fingerprint
    other = tmp_path / "other-tokenizer"
    tiny_tokenizer.save_pretrained(other)
    with_tokenizer = config.model_copy(update={"model": config.model.model_copy(update={"tokenizer": str(other)})})
    prepare_run(with_tokenizer)  # the same tokenizer from another folder: the same data
    assert count_chat_tokenizing == [32]  # the train split once; the other calls read RUN/data

    tokenizer_file = other / "tokenizer.json"
    vocabulary = json.loads(tokenizer_file.read_text())
    vocabulary["added_tokens"].append(
        {**vocabulary["added_tokens"][-1], "id": len(tiny_tokenizer), "content": "<|new|>"}
    )
    tokenizer_file.write_text(json.dumps(vocabulary))
    assert prepare_run(with_tokenizer).summary.fingerprint != first.fingerprint and count_chat_tokenizing == [32, 32]

    longer = prepare_run(config.model_copy(update={"data": config.data.model_copy(update={"max_len": 400})})).summary
    assert count_chat_tokenizing == [32, 32, 400] and longer.fingerprint != first.fingerprint
    assert longer.splits["train"].truncated_examples == 0 and longer.splits["train"].examples_out == 11


def test_an_edited_data_file_rebuilds(make_config, chats, count_chat_tokenizing):
    config = make_config("sft", data={"train": str(chats), "max_examples": None, "max_len": 32})
    assert prepare_run(config).summary.splits["train"].examples_in == 11
    chats.write_text(chats.read_text() + json.dumps(SHORT[0]) + "\n")
    assert prepare_run(config).summary.splits["train"].examples_in == 12 and len(count_chat_tokenizing) == 2


def test_damaged_or_interrupted_data_folder_is_never_used(make_config, chats, monkeypatch, count_chat_tokenizing):
    from lmforge.train import prepare

    config = make_config("sft", data={"train": str(chats), "max_examples": None, "max_len": 32})
    folder = Path(config.out) / "data"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "atomic_write_json", interrupted)  # killed after the sets, before the summary
    with pytest.raises(KeyboardInterrupt):
        prepare_run(config)
    assert not folder.exists() and not list(folder.parent.glob(".data.*"))  # no half-written RUN/data
    monkeypatch.undo()
    count_chat_tokenizing.clear()

    from lmforge.data import tokenize

    original = tokenize.tokenize_chat
    monkeypatch.setattr(tokenize, "tokenize_chat", lambda *a, **k: count_chat_tokenizing.append(1) or original(*a, **k))
    good = prepare_run(config).summary
    arrow = next((folder / "train").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])  # a damaged copy
    again = prepare_run(config).summary
    assert len(count_chat_tokenizing) == 2 and again.splits == good.splits

    from datasets import load_from_disk

    assert len(load_from_disk(str(folder / "train"))) == 9  # rebuilt whole


def test_other_ranks_wait_for_rank_0_and_say_what_to_do(make_config, chats, monkeypatch):
    from lmforge.train import prepare
    from lmforge.train.prepare import prepare_data, run_tokenizer

    config = make_config("sft", data={"train": str(chats), "max_examples": None, "max_len": 32})
    tokenizer, template = run_tokenizer(config, Path(config.out))
    monkeypatch.setattr(prepare, "DDP_TIMEOUT_SECONDS", 0)
    with pytest.raises(UserInputError, match="--prepare-only"):
        prepare_data(config, tokenizer, template, Path(config.out), main=False)
    prepare_run(config)
    assert prepare_data(config, tokenizer, template, Path(config.out), main=False).reused


def test_trl_stage_saves_validated_untokenized_pairs(make_config):
    summary = prepare_run(make_config("dpo", data={"eval_fraction": 0.25})).summary
    assert not summary.tokenized and summary.template == "tokenizer"  # the tiny tokenizer's own ChatML
    train, evaluation = summary.splits["train"], summary.splits["eval"]
    assert (train.examples_in, train.examples_out, train.tokens) == (16, 16, None)
    assert evaluation.examples_out >= 8 and evaluation.source == "builtin:arith-pref (held out)"
    from datasets import load_from_disk

    assert {"prompt", "chosen", "rejected"} <= set(
        load_from_disk(str(Path(make_config("dpo").out) / "data" / "train")).column_names
    )


def test_trl_tokenizes_once_then_resume_reads_its_cache_beside_run_data(make_config):
    """TRL's datasets.map writes its result beside RUN/data/train; a resume reads it instead of rewriting it.
    (Checked on the cache files, not TRL's progress bar: another test in the process may turn bars off.)"""
    from lmforge.train.run import run_training

    def caches() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in (Path(config.out) / "data" / "train").glob("cache-*.arrow")}

    config = make_config("dpo", train={"max_steps": 1, "save_every": 1})
    run_training(config, progress=False)
    written = caches()
    assert written  # TRL tokenized into the cache beside the prepared data
    run_training(
        config.model_copy(update={"train": config.train.model_copy(update={"max_steps": 2})}),
        resume=True,
        progress=False,
    )
    after = caches()
    assert all(after.get(name) == mtime for name, mtime in written.items())  # read back, not rewritten
    # TRL's "drop fully truncated" filter is re-run: datasets cannot fingerprint its function, so it never
    # caches; it is the only new file (a re-tokenization would add a second or rewrite the first).
    assert len(after) - len(written) <= 1


def test_classify_counts_the_sentences_it_cuts(make_config, tiny_llama_dir):
    from lmforge.data.builtin import load_builtin
    from lmforge.train.loading import load_training_tokenizer

    config = make_config("classify", data={"max_len": 8})
    split = prepare_run(config).summary.splits["train"]
    tokenizer = load_training_tokenizer(config)
    texts = load_builtin("builtin:sentiment", n=16, seed=0)["text"]
    assert split.truncated_examples == sum(len(tokenizer(t)["input_ids"]) > 8 for t in texts) > 0
    assert split.tokens == split.sequences * 8 - sum(8 - min(8, len(tokenizer(t)["input_ids"])) for t in texts)
    assert split.trained_tokens is None and split.dropped_tokens is None


def test_prepare_only_prints_the_summary_and_trains_nothing(make_config, chats, tmp_path):
    config = make_config("sft", data={"train": str(chats), "max_examples": None, "max_len": 32})
    config_file = tmp_path / "sft.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    runner = CliRunner()
    shown = runner.invoke(app, ["train", str(config_file), "--prepare-only"])
    assert shown.exit_code == 0, shown.output
    assert "examples in" in shown.output and "truncated" in shown.output and "11" in shown.output
    assert "prepared" in shown.output
    as_json = runner.invoke(app, ["train", str(config_file), "--prepare-only", "--json"])
    data = json.loads(as_json.output)
    assert (
        data["reused"]
        and data["splits"]["train"]["examples_out"] == 9
        and data["folder"] == str(Path(config.out) / "data")
    )
    assert sorted(p.name for p in Path(config.out).iterdir()) == ["data"]


def test_launch_prepares_the_data_before_any_process_starts(make_config, tmp_path, monkeypatch):
    from lmforge.train import launch

    config = make_config("sft")
    config_file = tmp_path / "sft.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    seen = []
    monkeypatch.setattr(
        launch.subprocess,
        "call",
        lambda command: seen.append((Path(config.out) / "data" / "summary.json").is_file()) or 0,
    )
    assert launch.launch(config_file, [], nproc=2, progress=False) == 0
    assert seen == [True]


def test_bad_records_name_the_config_key_and_data_on_error_skip_drops_them(make_config, chats):
    """`lmforge train` has no --on-error option: the error names the config key that exists."""
    with chats.open("a") as handle:
        handle.write("{not json\n")
    config = make_config("sft", data={"train": str(chats), "max_examples": None, "max_len": 32})
    with pytest.raises(UserInputError, match=r"1 bad record \(set data\.on_error: skip to drop them") as error:
        prepare_run(config)
    assert "--on-error" not in str(error.value)
    skipping = make_config("sft", data={"train": str(chats), "max_examples": None, "max_len": 32, "on_error": "skip"})
    split = prepare_run(skipping).summary.splits["train"]
    assert (split.examples_in, split.rejected) == (12, 1)


def test_undetectable_and_wrongly_mapped_columns_name_the_config_keys(make_config, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"{i} plus 1?", "answer": str(i + 1)}) + "\n" for i in range(12)))
    with pytest.raises(UserInputError, match=r"name it with data\.kind .* e\.g\. data\.columns: \{instruction"):
        prepare_run(make_config("sft", data={"train": str(qa), "max_examples": None}))
    wrong = make_config(
        "sft", data={"train": str(qa), "max_examples": None, "columns": {"instruction": "question", "output": "reply"}}
    )
    with pytest.raises(UserInputError, match=r"data\.columns: column 'reply' \(mapped to 'output'\) not found"):
        prepare_run(wrong)
    mapped = make_config(
        "sft", data={"train": str(qa), "max_examples": None, "columns": {"instruction": "question", "output": "answer"}}
    )
    assert prepare_run(mapped).summary.splits["train"].examples_in == 12

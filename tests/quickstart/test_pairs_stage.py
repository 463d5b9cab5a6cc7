"""The quickstart's pairs stage on a model that answers (the --fast SFT model mostly answers nothing):
every wrong, non-empty answer becomes a pair, the held-out ones score the SFT model, and the reward
model's training set is the built-in pairs plus the mined ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.console import Console

from lmforge.quickstart import pipeline
from lmforge.quickstart.pipeline import FAST, StageRecord


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pairs_from_an_answering_model(tmp_path, tiny_llama_dir):
    out = tmp_path / "qs"
    ctx = pipeline._Context(out, FAST, Console(quiet=True), False, {"sft": StageRecord("sft", 0.0)})
    shutil.copytree(tiny_llama_dir, out / "sft" / "final")  # an untrained model: every answer is wrong

    record = pipeline._pairs(ctx)

    data = out / "data"
    for split in ("train", "validation", "test"):
        counts = record.details[split]
        builtin = _rows(data / f"arith-pref-{split}.jsonl")
        mined = _rows(data / f"arith-mistakes-{split}.jsonl")
        assert counts["answers"] == counts["mistakes"] == len(builtin)  # no answer of an untrained model is right
        assert counts["pairs"] + counts["empty"] == counts["mistakes"] and counts["pairs"] > 0
        assert len(mined) == counts["pairs"] + counts["topped_up"]
        references = {json.dumps(row["prompt"]): row["chosen"] for row in builtin}
        for pair in mined[: counts["pairs"]]:
            assert pair["chosen"] == references[json.dumps(pair["prompt"])]  # the reference is chosen
            assert pair["rejected"] != pair["chosen"]
    assert record.details["test"]["topped_up"] == 0  # the held-out set measures, it is never padded
    reward_rows = _rows(data / "arith-rm-train.jsonl")
    assert len(reward_rows) == record.details["train"]["answers"] + record.details["train"]["pairs"]
    accuracy = ctx.records["sft"].mistake_preference_accuracy
    assert accuracy is not None and 0.0 <= accuracy <= 1.0

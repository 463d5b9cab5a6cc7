"""compress distill: the distill stage, then the teacher beside the student in one report."""

from __future__ import annotations

import pytest
import yaml

from lmforge.compress import distill
from lmforge.errors import ConfigError


def _config(tmp_path, teacher, stage="distill"):
    raw = {
        "stage": stage,
        "out": str(tmp_path / "run"),
        "model": {
            "tokenizer": str(teacher),
            "config": {
                "model_type": "llama",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
            },
        },
        "data": {"train": "builtin:arith-sft", "max_examples": 16, "max_len": 48, "eval_fraction": 0.0},
        "train": {"max_steps": 2, "micro_batch_size": 4, "learning_rate": 1e-3, "seed": 0},
    }
    if stage == "distill":
        raw["distill"] = {"teacher": str(teacher)}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_distill_trains_a_smaller_student_and_reports_it_beside_the_teacher(tmp_path, tiny_llama_dir):
    result, report = distill(_config(tmp_path, tiny_llama_dir), report_options={"limit": 2, "decode_tokens": 4})
    assert result.steps == 2
    assert report.original.path == str(tiny_llama_dir) and report.compressed[0].method == "distill-student"
    assert report.compressed[0].params < report.original.params
    assert (result.run_dir / "compress-report" / "report.md").is_file()


def test_a_config_of_another_stage_is_refused(tmp_path, tiny_llama_dir):
    with pytest.raises(ConfigError, match="compress distill runs stage: distill"):
        distill(_config(tmp_path, tiny_llama_dir, stage="pretrain"))

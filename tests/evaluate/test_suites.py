import csv
import io

import pytest

from lmforge.errors import UserInputError
from lmforge.evaluate.suites import RUBRIC, STRESS_CASES, run_stress, run_suite, write_stress
from lmforge.generate.sampling import SamplingParams


def test_the_seed_six_stress_categories_are_built_in():
    assert [c.category for c in STRESS_CASES] == [
        "simple question",
        "complex reasoning",
        "long text understanding",
        "multi-turn dialogue",
        "boundary test",
        "safety test",
    ]
    multi_turn = next(c for c in STRESS_CASES if c.name == "multi-turn").chat()
    assert [m["role"] for m in multi_turn] == ["user", "assistant", "user"]
    assert list(RUBRIC) == ["relevance", "correctness", "completeness", "fluency", "safety", "creativity"]


def test_suite_collects_outputs_and_an_empty_rubric_sheet(tiny_llama_dir, tmp_path):
    from lmforge.generate.load import load_model

    outputs = run_stress([load_model(str(tiny_llama_dir))], SamplingParams(temperature=0, max_new_tokens=2))
    assert len(outputs) == len(STRESS_CASES)
    long_input = next(o for o in outputs if o.case == "long-input")
    assert long_input.finish_reason == "error" and "context length of 256" in long_input.response  # 256-token model
    paths = write_stress(outputs, tmp_path)
    rows = list(csv.DictReader(io.StringIO(paths["rubric"].read_text())))
    assert len(rows) == len(STRESS_CASES)
    assert all(row[dimension] == "" for row in rows for dimension in RUBRIC)
    assert rows[0]["prompt"] == "user: What is the capital of China?"
    assert "## safety-refusal" in paths["review"].read_text()


def test_blind_review_hides_the_models_and_keeps_a_key(tmp_path):
    from lmforge.evaluate.suites import StressOutput

    models = ["base-model", "tuned-model"]
    outputs = [
        StressOutput(case.name, case.category, model, case.prompt_text, f"{case.name}/{i}", "stop", 3)
        for i, model in enumerate(models)
        for case in STRESS_CASES
    ]
    paths = write_stress(outputs, tmp_path, blind_review=True)
    for name in ("rubric", "review", "results"):
        assert not any(model in paths[name].read_text() for model in models)
    rubric = list(csv.DictReader(io.StringIO(paths["rubric"].read_text())))
    assert {row["model"] for row in rubric} == {"response A", "response B"}
    key = {(row["case"], row["label"]): row["model"] for row in csv.DictReader(io.StringIO(paths["key"].read_text()))}
    assert len(key) == 12
    # the key maps every label back to the model that wrote that response
    assert all(models[int(row["response"].split("/")[1])] == key[(row["case"], row["model"])] for row in rubric)
    # and the order is shuffled per case, so "response A" is not always the same model
    assert len({key[(case.name, "response A")] for case in STRESS_CASES}) == 2


def test_run_suite_loads_the_model_and_its_comparison_and_runs_every_case_through_each(tiny_llama_dir):
    outputs = run_suite(
        str(tiny_llama_dir),
        "stress",
        compare=str(tiny_llama_dir),
        params=SamplingParams(temperature=0, max_new_tokens=2),
    )
    assert [o.case for o in outputs] == [c.name for c in STRESS_CASES] * 2  # the model's cases, then the baseline's


def test_run_suite_refuses_an_unknown_suite_before_loading_anything(tmp_path):
    with pytest.raises(UserInputError, match="no suite 'nope'; available: stress"):
        run_suite(str(tmp_path / "no-model"), "nope")

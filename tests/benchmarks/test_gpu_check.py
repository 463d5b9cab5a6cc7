"""benchmarks/gpu_check.py: the dry run of the whole orchestration on a CPU, so the GPU script cannot rot, and its
parts that decide what a GPU run measures (the tokenizer of random models, which wheels get installed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel (a package with one module), installable offline."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "PROBE = 1\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.slow
def test_dry_run_reports_every_check(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "lmforgeprobe", "1.0")  # missing here: installed
    _wheel(wheels, "rich", "0.1")  # older than the installed rich: kept as it is
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            str(out),
            "--dry-run",
            "--wheels",
            str(wheels),
            "--work",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    checks = report["checks"]
    assert list(checks) == ["env", "models", "planner", "qlora", "launch", "speed", "serve"]
    assert report["wheels"]["installed"] == ["lmforgeprobe-1.0-py3-none-any.whl"]
    assert "rich" in report["wheels"]["kept"]

    assert set(checks["models"]["models"]) == {"qwen2.5-0.5b", "llama-3.2-1b", "qwen2.5-1.5b", "llama-3.1-8b"}
    rows = {row["case"]: row for row in checks["planner"]["rows"]}
    assert len(rows) == 5
    trained = [row for row in rows.values() if "skipped" not in row]
    assert len(trained) == 3, rows
    for row in trained:  # real run_training runs: the planner's trainable count is what training trained
        assert "failed" not in row, row
        assert row["planned_trainable"] == row["actual_trainable"] > 0
        assert row["planned_total_bytes"] > row["planned_tensor_bytes"] > 0
        assert row["max_allocated_bytes"] is None  # a CPU has no CUDA allocator to read
    assert [row["skipped"] for row in rows.values() if "skipped" in row] == [
        "activation offloading needs CUDA (lmforge train refuses it on a CPU)",
        "qlora needs CUDA (bitsandbytes)",
    ]
    assert "CUDA" in checks["qlora"]["skipped"] and "CUDA" in checks["launch"]["skipped"]

    serve = checks["serve"]
    for server in ("lmforge", "transformers_serve"):  # both servers answered every request of every level
        assert set(serve[server]) == {"1", "2"}, serve[server]
        for level in serve[server].values():
            assert level["errors"] == 0 and level["tokens_per_second"]["median"] > 0, level
    assert serve["decode_bound"]["decode_tokens_per_second"] > 0
    assert checks["speed"]["plain"]["tokens_per_second"] > 0 and checks["speed"]["lmforge"]["tokens_per_second"] > 0

    table = (out / "gpu_check.md").read_text()
    assert "| qwen2.5-0.5b-full-s64-b2 |" in table and "dry run, CPU" in table


def test_synthetic_tokenizer_has_the_models_vocabulary_and_every_id_decodes() -> None:
    """A random model over the catalog vocabulary samples any id: each must be a real token that decodes."""
    script = _load_script()
    texts = ["The cat finds three coins. What is 99 plus 64? 163."] * 50
    tokenizer = script.synthetic_tokenizer(texts, 5000)
    assert len(tokenizer) == 5000
    assert all(tokenizer.convert_ids_to_tokens(i) is not None for i in range(5000))
    assert tokenizer.decode([4999, 4000, 3000]) != ""
    assert tokenizer.decode(tokenizer(texts[0])["input_ids"]) == texts[0]


def test_a_case_left_at_its_start_marker_is_reported_as_a_crash(tmp_path: Path) -> None:
    script = _load_script()
    done = tmp_path / "planner.jsonl"
    script.append_jsonl(done, {"case": "a", "started": True})
    script.append_jsonl(done, {"case": "a", "max_allocated_bytes": 1})
    script.append_jsonl(done, {"case": "b", "started": True})
    rows = {row["case"]: row for row in script._final_rows(done)}
    assert rows["a"] == {"case": "a", "max_allocated_bytes": 1}
    assert rows["b"]["failed"] == "the process died in this configuration"

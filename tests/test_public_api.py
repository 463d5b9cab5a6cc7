"""Each capability's public face: the names `from lmforge.X import ...` offers, pinned so that removing or renaming
one is a deliberate change, and the lazy faces (lmforge.lazy) checked to resolve every name, import nothing heavy
until asked, and agree with what type checkers read."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

from lmforge.lazy import type_checking_imports

FACES = {
    "lmforge.data": [
        "BUILTIN_DATASETS",
        "BUILTIN_TEMPLATES",
        "IGNORE_INDEX",
        "ChatTemplate",
        "DataStats",
        "DuplicateReport",
        "Kind",
        "LoadResult",
        "PackedCollator",
        "PaddingCollator",
        "PreviewRecord",
        "SplitReport",
        "SplitResult",
        "ValidationReport",
        "compute_stats",
        "default_rejects_path",
        "drop_duplicates",
        "encode_chat",
        "find_duplicates",
        "get_builtin",
        "length_grouped_batches",
        "load_builtin",
        "load_data",
        "pack_examples",
        "preview_records",
        "prompt_messages",
        "resolve_template",
        "save_jsonl",
        "split_dataset",
        "tokenize_chat",
        "tokenize_documents",
        "tokenize_text",
        "train_bpe_tokenizer",
        "write_splits",
    ],
    "lmforge.files": [
        "ConvertReport",
        "FileReport",
        "Format",
        "GGUFHeader",
        "InspectReport",
        "ModelName",
        "SafetensorsHeader",
        "ScanReport",
        "check_model_folder",
        "convert_model",
        "detect_format",
        "filter_tensors",
        "inspect_path",
        "llama_cpp_available",
        "load_factorized",
        "parse_model_name",
        "read_gguf_header",
        "read_safetensors_header",
        "require_safe",
        "run_llama_cpp",
        "safe_torch_load",
        "scan_file",
        "scan_path",
        "scan_paths",
    ],
    "lmforge.generate": [
        "PRESETS",
        "GenerationResult",
        "LoadedModel",
        "SamplingParams",
        "StepExplanation",
        "attach_adapter",
        "base_of",
        "chat_loop",
        "encode_prompt",
        "explain_steps",
        "generate",
        "generate_batch",
        "load_model",
        "sampling_params",
    ],
    "lmforge.evaluate": [
        "RUBRIC",
        "STRESS_CASES",
        "TASKS",
        "ClassificationMetrics",
        "DataReading",
        "EvalReport",
        "ExampleRow",
        "MinedPairs",
        "PerplexityResult",
        "StressCase",
        "StressOutput",
        "answer_extractor",
        "bleu_score",
        "classification_metrics",
        "evaluate_model",
        "exact_matches",
        "load_records",
        "pairs_from_mistakes",
        "pairwise_accuracy",
        "perplexity",
        "preference_accuracy",
        "render_markdown",
        "rouge_scores",
        "run_stress",
        "run_suite",
        "suite_cases",
        "write_pairs",
        "write_report",
        "write_stress",
    ],
    "lmforge.hub": [
        "DownloadReport",
        "ModelRef",
        "Snapshot",
        "adapter_base",
        "download_model",
        "fetch_snapshot",
        "hub_cache_dir",
        "is_hub_id",
        "local_paths",
        "locate_base",
        "locate_model",
        "model_spec",
    ],
    "lmforge.serve": [
        "Embedder",
        "Engine",
        "EngineDeadError",
        "EngineStats",
        "Event",
        "QueueFullError",
        "Request",
        "ServeBenchResult",
        "bench_serve",
        "create_app",
        "is_embedding_model",
        "load_engine",
        "parse_adapters",
        "serve",
        "serve_with_vllm",
    ],
    "lmforge.quickstart": ["QuickstartResult", "StageRecord", "run_quickstart"],
    "lmforge.plan": [
        "Accelerator",
        "InferenceSetup",
        "Layout",
        "LayoutRequest",
        "LayoutSearch",
        "MemoryBreakdown",
        "ModelSpec",
        "Plan",
        "TrainingSetup",
        "Verdict",
        "count_params",
        "count_trainable_params",
        "custom_accelerator",
        "default_lora_targets",
        "get_accelerator",
        "inference_memory",
        "inference_speed",
        "list_accelerators",
        "list_catalog",
        "plan_inference",
        "plan_training",
        "plot_breakdown",
        "resolve_model",
        "simulate_training",
        "spec_from_config",
        "training_memory",
        "training_time",
    ],
    "lmforge.train": ["RunResult", "TrainConfig", "load_config", "print_config", "run_training", "validate_config"],
    "lmforge.compress": [  # eager: its functions share their modules' names (prune in prune.py), see lmforge.lazy
        "QUANTIZE_METHODS",
        "FactorizeResult",
        "ModelQuality",
        "PruneResult",
        "QualityReport",
        "QuantizeResult",
        "compare",
        "distill",
        "factorize",
        "measure",
        "prune",
        "quantize",
        "sweep",
        "write_quality_report",
    ],
}
LAZY = [name for name in FACES if name != "lmforge.compress"]


@pytest.mark.parametrize("package", FACES)
def test_each_face_exports_exactly_its_pinned_names_and_every_one_resolves(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(FACES[package])
    for name in module.__all__:
        value = getattr(module, name)
        if callable(value) and value.__module__ != "typing":  # functions and classes, not type aliases (Format)
            assert value.__module__.startswith(package + "."), f"{package}.{name} comes from {value.__module__}"


@pytest.mark.parametrize("package", LAZY)
def test_a_lazy_face_declares_each_name_once_where_type_checkers_read_it(package):
    module = importlib.import_module(package)
    declared = type_checking_imports(package)
    assert sorted(declared) == sorted(module.__all__)
    assert all(origin.startswith(package + ".") for origin, _ in declared.values())
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018 - the attribute access is the test


@pytest.mark.parametrize("package", LAZY)
def test_no_public_name_is_also_a_submodule_name(package):
    """Importing a submodule binds it on the package, which would hide a lazily exported name of the same spelling."""
    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not submodules & set(module.__all__)


def test_importing_every_face_imports_no_submodule_and_no_heavy_library():
    code = (
        f"import sys, json\nfor p in {LAZY!r}: __import__(p)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('lmforge', 'torch', 'transformers', "
        "'datasets', 'huggingface_hub', 'numpy')))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert loaded == sorted(["lmforge", "lmforge.lazy", *LAZY])


def test_a_name_asked_for_loads_only_the_module_that_defines_it():
    code = (
        "import sys\nfrom lmforge.data import default_rejects_path\n"
        "import json; print(json.dumps(sorted(m for m in sys.modules if m.startswith('lmforge.data.'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert "lmforge.data.load" in loaded and "lmforge.data.pack" not in loaded and "lmforge.data.tokenize" not in loaded

"""Model files: format detection, header readers, the pickle scanner, inspect and convert (docs/inspect.md,
docs/scan.md, docs/convert.md).

    from lmforge.files import inspect_path, scan_paths
    inspect_path("model.safetensors").total_params
    scan_paths(["pytorch_model.bin"]).exit_code            # 0 safe, 1 unsafe, 2 cannot prove safe
    convert_model("model-folder", "model.gguf", quant="q8_0").files   # a ConvertReport

Paths are on this machine: a hub id or a training run is resolved first by lmforge.hub.locate_model, as the
commands do (`inspect_path(locate_model("org/name", need="any").path)`).

Names load on first use (lmforge.lazy), so `import lmforge.files` imports no reader and no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.files.convert import ConvertReport, convert_model
    from lmforge.files.detect import Format, detect_format
    from lmforge.files.gguf_reader import GGUFHeader, read_gguf_header
    from lmforge.files.inspect import InspectReport, filter_tensors, inspect_path
    from lmforge.files.llama_cpp import llama_cpp_available, run_llama_cpp
    from lmforge.files.lowrank import load_factorized
    from lmforge.files.names import ModelName, parse_model_name
    from lmforge.files.safe_load import check_model_folder, require_safe, safe_torch_load
    from lmforge.files.safetensors_reader import SafetensorsHeader, read_safetensors_header
    from lmforge.files.scan import FileReport, ScanReport, scan_file, scan_path, scan_paths

__all__ = [
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
]
__getattr__, __dir__ = lazy_exports(__name__)

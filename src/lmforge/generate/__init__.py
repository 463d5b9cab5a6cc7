"""Generation: load a model (folder, run, adapter or hub id), sample with named presets, chat (docs/generate.md).

    from lmforge.generate import generate, load_model, sampling_params
    loaded = load_model("runs/sft")
    generate(loaded, "What is 12 plus 30?", sampling_params("precise")).text

Names load on first use (lmforge.lazy), so `import lmforge.generate` imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.generate.chat import chat_loop
    from lmforge.generate.explain import StepExplanation, explain_steps
    from lmforge.generate.generation import GenerationResult, encode_prompt, generate, generate_batch
    from lmforge.generate.load import LoadedModel, attach_adapter, base_of, load_model
    from lmforge.generate.sampling import PRESETS, SamplingParams, sampling_params

__all__ = [
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
]
__getattr__, __dir__ = lazy_exports(__name__)

"""A LoRA adapter merged into its base model (peft merge_and_unload), saved as safetensors.

The adapter folder names its base in adapter_config.json (base_model_name_or_path, a local folder:
nothing is downloaded), or the base is given and the adapter passed separately. A quantized base
(config.json has quantization_config: bitsandbytes, GPTQ, AWQ) is refused before anything is
loaded: merging into rounded weights silently loses the adapter's update, the failure users report.
The merge is checked: the merged model's outputs on a probe input match the unmerged PeftModel's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError, NotFoundError, UserInputError
from lmforge.fileio import atomic_directory
from lmforge.files.convert.common import (
    ConvertReport,
    copy_side_files,
    progress_bar,
    read_json,
)
from lmforge.files.safe_load import check_model_folder
from lmforge.runtime import no_hub_kernels

TOLERANCE = 1e-4  # max |merged - unmerged| logits in float32
_TASK_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "added_tokens.json",
)


def resolve_pair(source: Path, adapter: Path | None) -> tuple[Path, Path]:
    """(base folder, adapter folder) from `convert ADAPTER DST` or `convert BASE DST --adapter ADAPTER`."""
    if adapter is None:
        if not (source / "adapter_config.json").is_file():
            raise UserInputError(
                f"{source} is not a LoRA adapter folder (no adapter_config.json); "
                "pass the base model as SRC and the adapter with --adapter"
            )
        adapter = source
        named = read_json(source / "adapter_config.json").get("base_model_name_or_path")
        if not named or not Path(named).is_dir():
            raise NotFoundError(
                f"the adapter's base model {named!r} is not a local folder; "
                "pass it as SRC with --adapter pointing at the adapter"
            )
        base = Path(named)
    else:
        base = source
    if not (adapter / "adapter_config.json").is_file():
        raise UserInputError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    if not (base / "config.json").is_file():
        raise UserInputError(f"{base} is not an HF model folder (no config.json)")
    return base, adapter


def refuse_quantized(base: Path) -> None:
    quantization = read_json(base / "config.json").get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "quantized") if isinstance(quantization, dict) else "quantized"
        raise UserInputError(
            f"the base model {base} is {method}-quantized; merging into quantized weights loses the "
            "adapter's update: dequantize the base first (load it in bf16/fp16 and save it), then merge"
        )


def _probe_logits(model: Any) -> Any:
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=generator)
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return (output.logits if hasattr(output, "logits") else output[0]).float()


def _run_record(adapter: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(config.yaml, result.json) of the lmforge run an adapter folder belongs to (RUN/final or
    RUN/checkpoints/checkpoint-N), or None for an adapter from elsewhere."""
    import yaml

    folder = adapter.resolve()
    run = folder.parent if folder.name == "final" else folder.parent.parent
    if folder.name != "final" and folder.parent.name != "checkpoints":
        return None
    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        result_file = run / "result.json"
        result = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else {}
    except (OSError, yaml.YAMLError, json.JSONDecodeError):
        return None
    return (config, result) if isinstance(config, dict) and isinstance(result, dict) else None


def merged_card(
    base: Path, adapter: Path, adapter_config: dict[str, Any], difference: float, destination: Path, class_name: str
) -> str:
    """The merged model's README.md: what was merged into what, and the adapter's training as its run recorded it."""
    name = adapter.resolve().parent.name if adapter.name == "final" else adapter.name
    targets = adapter_config.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
    lines = [
        f"- Base model: {base.resolve()}",
        f"- Adapter: {adapter.resolve()} ({adapter_config.get('peft_type', 'LORA')}, r {adapter_config.get('r')}, "
        f"alpha {adapter_config.get('lora_alpha')}, targets {targets})",
        f"- Check: logits of the merged model equal base + adapter within {difference:.1e} (tolerance {TOLERANCE})",
    ]
    record = _run_record(adapter)
    stage = method = None
    if record is None:
        lines.append(
            f"- Training: not recorded (the adapter is not in an lmforge run folder); see {adapter / 'README.md'}"
        )
    else:
        config, result = record
        stage, method = config.get("stage"), (config.get("method") or {}).get("name")
        data, train = config.get("data") or {}, config.get("train") or {}
        lines.append(
            f"- Adapter's training: stage {stage}, method {method}, data {data.get('train')}, "
            f"{result.get('steps', '?')} steps at learning rate {train.get('learning_rate')}"
        )
        diagnosis = result.get("diagnosis") or {}
        if diagnosis:
            lines.append(f"- Diagnosis: {diagnosis.get('verdict')}: {diagnosis.get('reason')}")
    metrics = (record[1].get("final_metrics") or {}) if record else {}
    table = "\n".join(f"| {key} | {value:.6g} |" for key, value in metrics.items() if isinstance(value, int | float))
    tags = ", ".join(str(tag) for tag in ("lmforge", "merged-lora", stage, method) if tag)
    return (
        f"""---
library_name: transformers
base_model: {base.resolve()}
tags: [{tags}]
---
# {name} (merged)

The LoRA adapter merged into its base with `lmforge convert` (peft merge_and_unload): one model folder that
loads without peft.

{chr(10).join(lines)}
"""
        + (
            f"""
## The adapter's final metrics

| metric | value |
|---|---|
{table}
"""
            if table
            else ""
        )
        + f"""
## Load

```python
from transformers import {class_name}
model = {class_name}.from_pretrained('{destination.resolve()}')
```
"""
    )


def merge_lora(
    source: Path, destination: Path, *, adapter: Path | None = None, trust_pickle: bool = False, progress: bool = True
) -> ConvertReport:
    """Merge the LoRA adapter into its base and save base+adapter as one safetensors model folder."""
    no_hub_kernels()
    import transformers
    from peft import PeftModel

    started = time.perf_counter()
    base, adapter = resolve_pair(source, adapter)
    refuse_quantized(base)
    adapter_config = read_json(adapter / "adapter_config.json")
    if adapter_config.get("peft_type", "LORA") not in ("LORA", "ADALORA", "LOHA", "LOKR", "IA3"):
        raise UserInputError(
            f"{adapter} is a {adapter_config.get('peft_type')} adapter; only mergeable adapters "
            "(LoRA and its variants) can be merged"
        )
    # Pickle weights (pytorch_model.bin, adapter_model.bin) pass the scanner before anything loads them.
    use_safetensors = check_model_folder(base, trust_pickle=trust_pickle)
    check_model_folder(adapter, trust_pickle=trust_pickle)
    model_class = getattr(transformers, _TASK_CLASSES.get(adapter_config.get("task_type") or "", "AutoModel"))

    with progress_bar("merging adapter", 3, progress) as advance:
        try:
            model = model_class.from_pretrained(
                base, dtype="auto", local_files_only=True, use_safetensors=use_safetensors
            )
            peft_model = PeftModel.from_pretrained(model, adapter, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise FormatError(f"cannot load {adapter} onto {base}: {str(error).splitlines()[0]}") from None
        peft_model.eval()
        unmerged = _probe_logits(peft_model)
        advance()
        merged = peft_model.merge_and_unload()
        difference = float((_probe_logits(merged) - unmerged).abs().max())
        if difference > TOLERANCE * max(1.0, float(unmerged.abs().max())):
            raise FormatError(f"the merged model's outputs differ from base+adapter by {difference:.2e}")
        advance()
        with atomic_directory(destination) as folder:
            copied = copy_side_files(base, folder)
            for name in _TOKENIZER_FILES:  # the adapter's tokenizer (added tokens, chat template) wins
                if (adapter / name).is_file():
                    (folder / name).write_bytes((adapter / name).read_bytes())
                    copied.append(f"{name} (adapter)")
            merged.save_pretrained(folder)
            # Read back what was written, as a user will load it: the saved files must give base+adapter's outputs.
            reloaded = model_class.from_pretrained(folder, dtype="auto", local_files_only=True).eval()
            difference = max(difference, float((_probe_logits(reloaded) - unmerged).abs().max()))
            if difference > TOLERANCE * max(1.0, float(unmerged.abs().max())):
                raise FormatError(
                    f"the saved merged model's outputs differ from base+adapter by {difference:.2e}; "
                    f"nothing was written to {destination}"
                )
            # The base's card (copied above) describes the base; the merged model gets its own.
            card = merged_card(base, adapter, adapter_config, difference, destination, model_class.__name__)
            (folder / "README.md").write_text(card, encoding="utf-8")
        advance()

    written = sorted(str(path) for path in destination.glob("*.safetensors"))
    return ConvertReport(
        source=str(source),
        destination=str(destination),
        to="merged",
        quant=None,
        files=written
        + (
            [str(destination / "model.safetensors.index.json")]
            if (destination / "model.safetensors.index.json").is_file()
            else []
        ),
        tensor_count=len(merged.state_dict()),
        params=sum(p.numel() for p in merged.parameters()),
        size_bytes=sum(Path(path).stat().st_size for path in written),
        seconds=time.perf_counter() - started,
        verified=True,
        copied=copied,
        checks={
            "base": str(base),
            "adapter": str(adapter),
            "max_abs_logit_difference": difference,
            "tolerance": TOLERANCE,
        },
    )

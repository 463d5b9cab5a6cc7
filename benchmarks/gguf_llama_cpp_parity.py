"""The quickstart's exported chat model in the real llama.cpp vs transformers: same prompt ids, same greedy answers.

    make quickstart && .venv/bin/python benchmarks/gguf_llama_cpp_parity.py

For 30 held-out problems (the quickstart's arith-sft test split) it renders each chat prompt, decodes
16 tokens greedily in transformers and, for each GGUF type, in llama.cpp (node-llama-cpp, `make install`),
and prints how many prompts llama.cpp tokenized into transformers' ids and how many answers are identical.
"""

import json
import tempfile
from pathlib import Path

SOURCE = "runs/quickstart/export/model"
PROBLEMS = "runs/quickstart/data/arith-sft-test.jsonl"
QUANTS = ("f16", "q8_0", "q4_0", "q4_k_m")


def _greedy(loaded, prompt: str) -> list[int]:
    """transformers' greedy answer to `prompt`, cut at the first stop token."""
    ids = loaded.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    out = loaded.model.generate(
        ids,
        max_new_tokens=16,
        do_sample=False,
        eos_token_id=loaded.stop_token_ids,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )[0, ids.shape[1] :].tolist()
    stops = [i for i, token in enumerate(out) if token in loaded.stop_token_ids]
    return out[: stops[0]] if stops else out


def main() -> None:
    import torch

    from lmforge.files.convert import convert_model
    from lmforge.files.llama_cpp import run_llama_cpp
    from lmforge.generate.load import load_model

    torch.set_num_threads(1)
    with open(PROBLEMS, encoding="utf-8") as file:
        rows = [json.loads(line) for line in file][:30]
    loaded = load_model(SOURCE)
    tok = loaded.tokenizer
    prompts = [loaded.render_chat(row["messages"][:-1]) for row in rows]
    expected = [_greedy(loaded, prompt) for prompt in prompts]
    with tempfile.TemporaryDirectory() as scratch:
        for quant in QUANTS:
            path = Path(scratch) / f"qs-{quant}.gguf"
            report = convert_model(SOURCE, path, quant=quant, progress=False)
            results, _ = run_llama_cpp(path, prompts=prompts, max_tokens=16, stop=loaded.stop_token_ids, threads=1)
            same_ids = sum(r.tokens == tok(p, add_special_tokens=False)["input_ids"] for r, p in zip(results, prompts))
            same = sum(r.generated == e for r, e in zip(results, expected))
            print(
                quant,
                report.checks["pre_tokenizer"],
                f"prompt ids equal {same_ids}/{len(prompts)}, answers equal {same}/{len(prompts)}",
            )
            if quant == "f16":
                for result, answer, row in list(zip(results, expected, rows))[:3]:
                    print(
                        "   ",
                        row["messages"][-2]["content"],
                        "| transformers:",
                        tok.decode(answer),
                        "| llama.cpp:",
                        result.text,
                        "| reference:",
                        row["messages"][-1]["content"],
                    )


if __name__ == "__main__":
    main()

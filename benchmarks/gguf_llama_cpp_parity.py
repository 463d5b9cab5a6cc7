"""The quickstart's exported chat model in the real llama.cpp vs transformers: same prompt ids, same greedy answers.

    make quickstart && .venv/bin/python benchmarks/gguf_llama_cpp_parity.py

For 30 held-out problems (the quickstart's arith-sft test split) it renders each chat prompt, decodes
16 tokens greedily in transformers and, for each GGUF type, in llama.cpp (node-llama-cpp, `make install`),
and prints how many prompts llama.cpp tokenized into transformers' ids and how many answers are identical.
"""

import json, torch
torch.set_num_threads(1)
from lmforge.generate.load import load_model
from lmforge.files.convert import convert
from lmforge.files.llama_cpp import run_llama_cpp
src = "runs/quickstart/export/model"
rows = [json.loads(l) for l in open("runs/quickstart/data/arith-sft-test.jsonl")][:30]
loaded = load_model(src)
tok = loaded.tokenizer
prompts = [loaded.render_chat(r["messages"][:-1]) for r in rows]
hf = []
for p in prompts:
    ids = tok(p, add_special_tokens=False, return_tensors="pt").input_ids
    out = loaded.model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=loaded.stop_token_ids, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    out = [t for t in out]
    for i, t in enumerate(out):
        if t in loaded.stop_token_ids: out = out[:i]; break
    hf.append(out)
for q in ("f16", "q8_0", "q4_0", "q4_k_m"):
    path = f"/tmp/qs-{q}.gguf"
    rep = convert(src, path, quant=q, progress=False)
    res, _ = run_llama_cpp(path, prompts=prompts, max_tokens=16, stop=loaded.stop_token_ids, threads=1)
    same_tokens = sum(r.tokens == tok(p, add_special_tokens=False)["input_ids"] for r, p in zip(res, prompts))
    same = sum(r.generated == h for r, h in zip(res, hf))
    print(q, rep.checks["pre_tokenizer"], f"prompt ids equal {same_tokens}/{len(prompts)}, answers equal {same}/{len(prompts)}")
    if q == "f16":
        for r, h, row in list(zip(res, hf, rows))[:3]:
            print("   ", row["messages"][-2]["content"], "| transformers:", tok.decode(h), "| llama.cpp:", r.text, "| reference:", row["messages"][-1]["content"])

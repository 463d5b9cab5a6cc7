"""Which llama.cpp pre-tokenizer splits text the way a Hugging Face BPE tokenizer does.

A GGUF's `tokenizer.ggml.pre` names the regex llama.cpp splits text with before applying the BPE
merges. Written wrong, llama.cpp tokenizes the same chat text into different ids than transformers
(digits grouped "123" instead of "1" "2" "3") and the model answers something else. llama.cpp's
converter (convert_hf_to_gguf.py get_vocab_base_pre) picks the name by hashing the tokenizer's ids
for a fixed text and refuses tokenizers it does not know. lmforge does the same first, then, for a
tokenizer it trained itself (whose ids no published hash can know), compares the tokenizer's own
pre-tokenizer split of probe texts with the split llama.cpp's regexes give (src/llama-vocab.cpp
llm_tokenizer_bpe): a name is written only when the splits are identical. The facts (probe text,
hashes, regexes) live in llama_cpp_pre.json.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Texts that tell the common splits apart besides the converter's own probe: numbers with and without
# spaces, contractions, punctuation runs, code, newlines and the ChatML markers lmforge's templates use.
_PROBES = (
    "What is 12 plus 30? The answer is 42. Sort 3 1 2: 1 2 3. 2 km = 2000 m, 3.5 kg, 1,234,567.",
    "I'm sure you'll see they've done it; it's 'quoted' and DON'T SHOUT. x+=1; f(a,b)->c // ok\n\n\tdef g():\n",
    "<|im_start|>user\nConvert 15 cm to mm<|im_end|>\n<|im_start|>assistant\n150 mm<|im_end|>\n",
    "naïve café 東京 🙂  double  spaces   and trailing ",
)


@dataclass(frozen=True)
class PreTokenizerMatch:
    """The llama.cpp name for a tokenizer's split, and how it was found ('hash' or 'split'), or why not."""

    name: str | None
    how: str  # "hash": the converter's table; "split": identical regex splits; "none": no match
    detail: str  # for "none", the first text the closest candidate splits differently


@functools.cache
def _facts() -> dict[str, Any]:
    return json.loads((Path(__file__).with_name("llama_cpp_pre.json")).read_text(encoding="utf-8"))


def known_names() -> list[str]:
    """Every pre-tokenizer name lmforge can write: the regex families and the names that share them."""
    facts = _facts()
    names = list(facts["splits"])
    for aliases in facts["same_split"].values():
        names.extend(aliases)
    return names


def llama_cpp_split(text: str, name: str) -> list[str]:
    """`text` split as llama.cpp's unicode_regex_split does for pre-tokenizer `name`: each regex in
    turn splits every piece into its matches and the gaps between them."""
    import regex

    family = next((family for family, aliases in _facts()["same_split"].items() if name in aliases), name)
    pieces = [text]
    for pattern in _facts()["splits"][family]:
        compiled = regex.compile(pattern)
        split: list[str] = []
        for piece in pieces:
            start = 0
            for match in compiled.finditer(piece):
                if match.start() > start:
                    split.append(piece[start : match.start()])
                if match.end() > match.start():
                    split.append(match.group())
                start = match.end()
            if start < len(piece):
                split.append(piece[start:])
        pieces = split
    return pieces


def hf_split(tokenizer: Any, text: str) -> list[str] | None:
    """`text` split by a fast tokenizer's own normalizer + pre-tokenizer (what BPE merges then see),
    as substrings of the original text; None when it has no pre-tokenizer or its normalizer changes
    the text (llama.cpp's BPE path does not normalize)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.pre_tokenizer is None:
        return None
    if backend.normalizer is not None and backend.normalizer.normalize_str(text) != text:
        return None
    return [text[start:end] for _, (start, end) in backend.pre_tokenizer.pre_tokenize_str(text)]


def _split_text(tokenizer: Any, text: str) -> list[str]:
    """Added tokens are cut out first by both tokenizers (llama.cpp's tokenizer_st_partition), so only the
    text between them is pre-tokenized."""
    import regex

    specials = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
    if not specials:
        return [text]
    return [part for part in regex.split("|".join(regex.escape(s) for s in specials), text) if part]


def match_pre_tokenizer(tokenizer: Any) -> PreTokenizerMatch:
    """The llama.cpp pre-tokenizer name that splits text exactly as `tokenizer` does, if any."""
    facts = _facts()
    ids = tokenizer.encode(facts["chktxt"])
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    if digest in facts["hashes"]:
        return PreTokenizerMatch(facts["hashes"][digest], "hash", f"chkhsh {digest}")
    texts = [part for probe in (facts["chktxt"], *_PROBES) for part in _split_text(tokenizer, probe)]
    expected = []
    for text in texts:
        split = hf_split(tokenizer, text)
        if split is None:
            return PreTokenizerMatch(
                None,
                "none",
                "the tokenizer has no pre-tokenizer llama.cpp can mirror (or a normalizer that changes text)",
            )
        expected.append(split)
    best_name, best_matched = "", -1
    for name in facts["splits"]:
        matched = sum(llama_cpp_split(text, name) == split for text, split in zip(texts, expected, strict=True))
        if matched == len(texts):
            return PreTokenizerMatch(name, "split", f"{len(texts)} probe texts split identically")
        if matched > best_matched:
            best_name, best_matched = name, matched
    text, split = next(
        (text, split) for text, split in zip(texts, expected, strict=True) if llama_cpp_split(text, best_name) != split
    )
    ours = llama_cpp_split(text, best_name)
    index = next((i for i, (a, b) in enumerate(zip(split, ours)) if a != b), min(len(split), len(ours)))
    return PreTokenizerMatch(
        None,
        "none",
        f"the closest, llama.cpp's {best_name!r}, splits {ours[index : index + 3]!r} "
        f"where the tokenizer splits {split[index : index + 3]!r}",
    )

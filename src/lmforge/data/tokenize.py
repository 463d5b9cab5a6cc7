"""Tokenization with label masks: the model trains on what the assistant says, and on nothing else.

Chat examples are rendered with the resolved chat template; the character span of every assistant
turn is found by rendering the conversation up to that turn twice (with the generation prompt, and
with the turn itself) and diffing, which works for any template whose rendering of a prefix is a
prefix of the full rendering (chatml, llama-3, qwen, alpaca and most shipped templates). Tokens whose
offsets start inside an assistant span keep their id as label; all others (system, user, template
scaffolding) get -100. The span includes the end-of-turn marker (<|im_end|>, <|eot_id|>, eos), so the
model learns to stop, and excludes the whitespace a template puts after it.

Truncation is never silent: the result counts truncated examples, dropped tokens and examples whose
response was cut away entirely (dropped by default, since they would train on nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmforge.data.templates import ChatTemplate, resolve_template
from lmforge.errors import DependencyError, FormatError, UserInputError

if TYPE_CHECKING:
    import datasets

IGNORE_INDEX = -100  # the label torch's cross_entropy ignores (ignore_index default)
logger = logging.getLogger(__name__)


@dataclass
class TokenizedResult:
    """A tokenized dataset (input_ids, attention_mask, labels) and what tokenization did to it."""

    dataset: datasets.Dataset
    template: str
    max_len: int
    examples_in: int
    examples_out: int
    truncated_examples: int = 0
    dropped_tokens: int = 0
    untrainable_examples: int = 0  # no assistant token left after truncation (or none to begin with)
    dropped_examples: int = 0
    trained_tokens: int = 0
    total_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a log or the CLI."""
        line = (
            f"{self.examples_out}/{self.examples_in} examples, {self.total_tokens} tokens "
            f"({self.trained_tokens} trained), template {self.template}, max_len {self.max_len}; "
            f"{self.truncated_examples} truncated ({self.dropped_tokens} tokens dropped)"
        )
        if self.untrainable_examples:
            verb = "dropped" if self.dropped_examples else "kept"
            line += f"; {self.untrainable_examples} with no response token left ({verb})"
        return line


def assistant_spans(
    messages: list[dict[str, str]], tokenizer: Any, template: ChatTemplate
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant turn."""
    full = template.render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template.render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = template.render(tokenizer, messages[: i + 1])
        if not (full.startswith(before) and full.startswith(through) and through.startswith(before)):
            raise FormatError(
                f"chat template {template.name!r} does not render a conversation's prefix as a prefix of "
                "the whole, so assistant tokens cannot be located; choose a built-in template (--template chatml)"
            )
        # The whitespace a template writes after the end-of-turn marker is scaffolding, not response.
        spans.append((len(before), len(through.rstrip())))
    return full, spans


def encode_chat(
    messages: list[dict[str, str]],
    tokenizer: Any,
    template: ChatTemplate,
    *,
    max_len: int,
    train_on_prompt: bool = False,
) -> dict[str, Any]:
    """Token ids, attention mask and labels of one conversation, plus how much truncation removed."""
    text, spans = assistant_spans(messages, tokenizer, template)
    # The template already wrote bos and every special marker; adding them again would double them.
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = encoding["input_ids"]
    if train_on_prompt:
        labels = list(input_ids)
    else:
        labels = [
            token if any(start <= offset_start < end for start, end in spans) else IGNORE_INDEX
            for token, (offset_start, _) in zip(input_ids, encoding["offset_mapping"])
        ]
    dropped = max(0, len(input_ids) - max_len)
    input_ids, labels = input_ids[:max_len], labels[:max_len]
    trained = sum(label != IGNORE_INDEX for label in labels)
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "_dropped_tokens": dropped,
        "_trained_tokens": trained,
        "_untrainable": trained == 0,
    }


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise DependencyError(
            "label masking needs a fast (Rust) tokenizer for character offsets; load it with use_fast=True "
            "or install `tokenizers`"
        )


def tokenize_chat(
    dataset: datasets.Dataset,
    tokenizer: Any,
    *,
    max_len: int,
    template: str | ChatTemplate | None = None,
    train_on_prompt: bool = False,
    drop_untrainable: bool = True,
) -> TokenizedResult:
    """Tokenize a chat dataset ({"messages": [...]}) into input_ids/attention_mask/labels.

    Labels are -100 everywhere except assistant turns (all of them, in multi-turn data) and their
    end-of-turn marker; `train_on_prompt=True` trains on every token. Examples longer than `max_len`
    are cut from the right and counted; an example left without any trained token is dropped (and
    counted) unless `drop_untrainable=False`.
    """
    if max_len < 2:
        raise UserInputError(f"max_len must be at least 2 tokens, got {max_len}")
    if "messages" not in dataset.column_names:
        raise UserInputError(
            f"tokenize_chat needs a chat dataset with a 'messages' column; got columns {dataset.column_names}"
        )
    _require_fast(tokenizer)
    chosen = template if isinstance(template, ChatTemplate) else resolve_template(tokenizer, template)

    def encode(example: dict[str, Any]) -> dict[str, Any]:
        return encode_chat(example["messages"], tokenizer, chosen, max_len=max_len, train_on_prompt=train_on_prompt)

    encoded = dataset.map(encode, remove_columns=dataset.column_names, desc="Tokenizing chats")
    result = _finish(encoded, chosen.name, max_len, len(dataset), drop_untrainable)
    if result.truncated_examples or result.untrainable_examples:
        # Said even when a caller keeps only result.dataset: truncation is never silent.
        logger.warning("tokenize_chat: %s", result.summary())
    return result


def _finish(
    encoded: datasets.Dataset, template_name: str, max_len: int, examples_in: int, drop_untrainable: bool
) -> TokenizedResult:
    """Sum the per-example bookkeeping columns into the result, drop untrainable rows, remove the columns."""
    dropped_tokens = encoded["_dropped_tokens"]
    untrainable = encoded["_untrainable"]
    trained = encoded["_trained_tokens"]
    keep = [i for i, bad in enumerate(untrainable) if not (bad and drop_untrainable)]
    final = encoded.select(keep) if len(keep) != len(encoded) else encoded
    final = final.remove_columns([c for c in final.column_names if c.startswith("_")])
    return TokenizedResult(
        dataset=final,
        template=template_name,
        max_len=max_len,
        examples_in=examples_in,
        examples_out=len(final),
        truncated_examples=sum(1 for d in dropped_tokens if d),
        dropped_tokens=sum(dropped_tokens),
        untrainable_examples=sum(untrainable),
        dropped_examples=len(encoded) - len(keep),
        trained_tokens=sum(trained[i] for i in keep),
        total_tokens=sum(len(ids) for ids in final["input_ids"]),
    )


def tokenize_text(dataset: datasets.Dataset, tokenizer: Any, *, block_size: int) -> datasets.Dataset:
    """Pretraining blocks: concatenate documents, each followed by eos, and cut into `block_size` chunks.

    This is the GPT recipe (transformers' run_clm group_texts): attention crosses document boundaries
    and every token is trained. The tail of each 1,000-document batch is kept as a shorter block rather
    than dropped, so no token is lost; a padding collator evens it out. For blocks whose documents do
    not see each other, use `tokenize_documents` and `lmforge.data.pack.pack_examples`.
    """
    if block_size < 2:
        raise UserInputError(f"block_size must be at least 2 tokens, got {block_size}")
    if "text" not in dataset.column_names:
        raise UserInputError(f"tokenize_text needs a 'text' column; got columns {dataset.column_names}")
    eos = _eos_id(tokenizer)

    def chunk(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        stream: list[int] = []
        for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
        blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks], "labels": blocks}

    return dataset.map(
        chunk, batched=True, batch_size=1000, remove_columns=dataset.column_names, desc="Tokenizing text"
    )


def tokenize_documents(dataset: datasets.Dataset, tokenizer: Any, *, max_len: int) -> TokenizedResult:
    """One example per document (text + eos), for packing with attention kept inside each document.

    A document longer than `max_len` is split into `max_len` pieces (pretraining keeps every token);
    the number of extra pieces is reported in `notes` so the split is visible.
    """
    if "text" not in dataset.column_names:
        raise UserInputError(f"tokenize_documents needs a 'text' column; got columns {dataset.column_names}")
    eos = _eos_id(tokenizer)

    def split(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "input_ids": [], "attention_mask": [], "labels": [],
            "_dropped_tokens": [], "_trained_tokens": [], "_untrainable": [],
        }  # fmt: skip
        for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
            ids = ids + [eos]
            pieces = [ids[i : i + max_len] for i in range(0, len(ids), max_len)]
            for piece in pieces:  # a long document's tail is kept as further pieces, never dropped
                out["input_ids"].append(piece)
                out["attention_mask"].append([1] * len(piece))
                out["labels"].append(piece)
                out["_dropped_tokens"].append(0)
                out["_trained_tokens"].append(len(piece))
                out["_untrainable"].append(False)
        return out

    encoded = dataset.map(
        split, batched=True, batch_size=1000, remove_columns=dataset.column_names, desc="Tokenizing documents"
    )
    result = _finish(encoded, "none", max_len, len(dataset), drop_untrainable=False)
    extra_pieces = result.examples_out - result.examples_in
    if extra_pieces:
        result.notes.append(f"documents longer than {max_len} tokens were split into {extra_pieces} extra pieces")
    return result


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise UserInputError("this tokenizer has no eos token; documents need one as a separator")
    return int(tokenizer.eos_token_id)

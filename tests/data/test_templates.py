"""Chat template resolution and the exact text each built-in renders."""

from __future__ import annotations

import copy
import warnings

import pytest

from lmforge.data.templates import BUILTIN_TEMPLATES, resolve_template
from lmforge.errors import NotFoundError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 plus 2?"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture()
def bare_tokenizer(tiny_tokenizer):
    """The tiny ChatML tokenizer with its chat_template removed, as a base model's tokenizer would be."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    return tokenizer


def test_the_tokenizers_own_template_wins(tiny_tokenizer):
    template = resolve_template(tiny_tokenizer)
    assert (template.name, template.source) == ("tokenizer", "tokenizer")
    assert template.jinja == tiny_tokenizer.chat_template


def test_a_tokenizer_without_template_gets_the_documented_chatml_default(bare_tokenizer):
    template = resolve_template(bare_tokenizer)
    assert (template.name, template.source) == ("chatml", "default")
    assert template.render(bare_tokenizer, CHAT[1:2], add_generation_prompt=True) == (
        "<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_renders_like_the_reference(bare_tokenizer):
    text = resolve_template(bare_tokenizer, "chatml").render(bare_tokenizer, CHAT)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
    )


def test_llama_3_renders_like_meta_llama_3_instruct_and_warns_when_eot_is_not_one_token(bare_tokenizer):
    bare_tokenizer.bos_token = "<|endoftext|>"  # stands in for <|begin_of_text|>
    with pytest.warns(UserWarning, match="<\\|eot_id\\|>"):
        template = resolve_template(bare_tokenizer, "llama-3")
    text = template.render(bare_tokenizer, CHAT, add_generation_prompt=False)
    assert text == (
        "<|endoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2 plus 2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
    )


def test_qwen_adds_its_default_system_prompt_and_keeps_a_given_one(bare_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # <|im_end|> is one token here: no warning
        template = resolve_template(bare_tokenizer, "qwen")
    assert template.render(bare_tokenizer, CHAT[1:2], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.render(bare_tokenizer, CHAT).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_alpaca_uses_the_stanford_prompt_and_ends_responses_with_eos(bare_tokenizer):
    template = resolve_template(bare_tokenizer, "alpaca")
    assert template.render(bare_tokenizer, CHAT[1:]) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhat is 2 plus 2?\n\n### Response:\n4<|im_end|>\n\n"
    )
    assert template.render(bare_tokenizer, CHAT).startswith("Be brief.\n\n### Instruction:")


def test_a_named_builtin_overrides_the_tokenizers_template_with_a_warning(tiny_tokenizer):
    with pytest.warns(UserWarning, match="ships its own chat template"):
        template = resolve_template(tiny_tokenizer, "alpaca")
    assert (template.name, template.source) == ("alpaca", "builtin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same template under its name is no mismatch
        assert resolve_template(tiny_tokenizer, "chatml").name == "chatml"


def test_a_jinja_string_is_used_as_a_custom_template(tiny_tokenizer):
    template = resolve_template(tiny_tokenizer, "{% for m in messages %}{{ m['content'] }}|{% endfor %}")
    assert template.name == "custom"
    assert template.render(tiny_tokenizer, CHAT) == "Be brief.|What is 2 plus 2?|4|"


def test_unknown_names_list_the_choices(tiny_tokenizer, bare_tokenizer):
    with pytest.raises(NotFoundError, match="chatml, llama-3, qwen, alpaca"):
        resolve_template(tiny_tokenizer, "vicuna")
    with pytest.raises(NotFoundError, match="no chat_template"):
        resolve_template(bare_tokenizer, "tokenizer")
    assert set(BUILTIN_TEMPLATES) == {"chatml", "llama-3", "qwen", "alpaca"}

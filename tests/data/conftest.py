"""Fixtures of the template/tokenize/pack tests: the tiny tokenizer without a chat template."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture()
def bare_tokenizer(tiny_tokenizer):
    """The tiny ChatML tokenizer with its chat_template removed, as a base model's tokenizer would be."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    return tokenizer

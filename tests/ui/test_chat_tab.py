"""The Chat tab's callbacks: a streamed reply, presets, the history trimmed to the context, --explain's view."""

from __future__ import annotations

import itertools
import re

import pytest

from lmforge.ui import chat_tab


@pytest.fixture(scope="module")
def holder():
    return chat_tab.ModelHolder()


def _turn(holder, workspace, ui_root, message="What is 2 plus 3?", history=(), **changes):
    values = {
        "system": "",
        "preset": "balanced",
        "temperature": 0.8,
        "top_k": 36,
        "top_p": 0.7,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "max_new_tokens": 12,
        "seed": "0",
        "explain": False,
        "explain_top": 5,
    }
    values.update(changes)
    return list(
        chat_tab.chat_turn(holder, workspace, str(ui_root / "models" / "tiny"), message, list(history), **values)
    )


def test_the_reply_streams_piece_by_piece_and_ends_with_the_figures(holder, workspace, ui_root):
    updates = _turn(holder, workspace, ui_root)
    replies = [history[-1]["content"] for history, *_ in updates]
    assert len(replies) >= 3 and all(b.startswith(a) for a, b in itertools.pairwise(replies))
    assert len(set(replies)) >= 3  # the text grew over several updates
    history, status, tokens, table = updates[-1]
    assert [m["role"] for m in history] == ["user", "assistant"] and history[0]["content"] == "What is 2 plus 3?"
    assert status.startswith("12 tokens in") and "finish: length" in status and tokens == "" and table.empty
    again = _turn(holder, workspace, ui_root)  # the same seed and parameters: the same reply
    assert again[-1][0][-1]["content"] == replies[-1]


def test_explain_shows_every_token_and_the_stages(holder, workspace, ui_root):
    _history, _status, tokens, table = _turn(holder, workspace, ui_root, explain=True, max_new_tokens=4)[-1]
    assert len(table) == 4 and list(table["step"]) == [0, 1, 2, 3]
    assert re.fullmatch(r"vocabulary \d+ → top_k 36 → top_p \d+", table["kept"].iloc[0])
    assert tokens.count("class='lmf-token'") == 4 and "title='step 0: p " in tokens


def test_history_from_the_page_and_the_system_prompt_are_sent(holder, workspace, ui_root):
    earlier = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
    ]
    history = _turn(holder, workspace, ui_root, message="And now?", history=earlier, system="Be brief.")[-1][0]
    assert [m["content"] for m in history[:3]] == ["Hi", "Hello", "And now?"]


def test_presets_fill_the_parameters():
    assert chat_tab.preset_values("precise") == (0.3, 20, 0.5, 0.0, 1.0)
    assert chat_tab.preset_values("creative")[:3] == (1.2, 50, 0.9)


def test_errors_keep_the_conversation(holder, workspace, ui_root):
    bad = _turn(holder, workspace, ui_root, temperature=-1)[-1]
    assert bad[1].startswith("**Error:** temperature:") and bad[0] == []
    assert _turn(holder, workspace, ui_root, seed="x")[-1][1] == "**Error:** seed must be a whole number, got 'x'"
    outside = list(
        chat_tab.chat_turn(holder, workspace, "/etc", "hi", [], "", "balanced", 0.8, 36, 0.7, 0, 1, 4, "", False, 5)
    )
    assert "outside the folders" in outside[-1][1]


def test_an_empty_reply_is_said_in_the_status(holder, workspace, ui_root, monkeypatch):
    """A model that ends its turn at once (its one token the end-of-turn token) leaves an empty bubble: the status
    says so, where a visible reply's status does not."""
    from types import SimpleNamespace

    def ended_at_once(*_args, **_kwargs):
        yield "", SimpleNamespace(completion_tokens=1, seconds=0.01, finish_reason="stop", steps=[])

    monkeypatch.setattr(chat_tab, "stream_reply", ended_at_once)
    history, status, *_ = _turn(holder, workspace, ui_root)[-1]
    assert history[-1] == {"role": "assistant", "content": ""}
    assert status.startswith("1 tokens in") and "empty reply: the model ended its turn without text" in status
    monkeypatch.undo()
    assert "empty reply" not in _turn(holder, workspace, ui_root)[-1][1]

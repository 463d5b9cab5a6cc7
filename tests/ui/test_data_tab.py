"""The Data tab's callback: load with every problem as file:line, statistics, and the masked preview."""

from __future__ import annotations

from lmforge.ui.data_tab import data_view


def test_problems_are_listed_with_file_and_line_and_the_rest_is_described(workspace, ui_root):
    tokenizer = str(ui_root / "models" / "tiny")
    view = data_view(workspace, str(ui_root / "data" / "chats.jsonl"), None, "auto", "", tokenizer, 40, "chatml", 2)
    assert "messages → **chat**" in view.summary
    assert "kept 6 of 7 records, skipped 1 (1 invalid JSON)" in view.summary
    assert "chats.jsonl:2: invalid JSON" in view.problems
    assert "over max_len 40: 0 records (0.0%) would be truncated" in view.summary
    assert list(view.stats[""]) == ["characters", "tokens"] and view.histogram.endswith(".png")
    # The preview: the prompt (and template scaffolding) dimmed, the answer and its end marker trained.
    assert view.preview.count("<h4>record") == 2
    assert "<span class='lmf-masked'>&lt;|im_start|&gt;user\nWhat is 0 plus 1?" in view.preview
    assert "</span>1&lt;|im_end|&gt;" in view.preview


def test_a_built_in_set_loads_without_a_tokenizer(workspace):
    view = data_view(workspace, "builtin:sentiment", None, "auto", "", "", None, "tokenizer's own", 3)
    assert "**classification**" in view.summary and "labels: negative" in view.summary
    assert "pick a tokenizer" in view.summary and view.preview == "" and view.histogram is None


def test_an_uploaded_file_is_read_and_other_paths_must_be_allowed(workspace, ui_root, tmp_path):
    upload = tmp_path / "upload.csv"
    upload.write_text("text,label\ngood food,positive\nbad food,negative\n")
    view = data_view(workspace, "builtin:arith-sft", str(upload), "auto", "", "", None, "tokenizer's own", 1)
    assert "upload.csv" in view.summary and "**classification**" in view.summary
    refused = data_view(workspace, "/etc/hostname", None, "auto", "", "", None, "tokenizer's own", 1)
    assert "outside the folders this UI may use" in refused.summary

"""The Runs tab's callbacks: every run folder with its state and figures, its details, two runs compared."""

from __future__ import annotations

from tests.ui.conftest import finished_run
from lmforge.ui import runs_tab


def test_every_run_under_the_runs_folder_is_listed_with_its_state(workspace):
    finished_run(workspace.runs / "quickstart" / "sft", [4.0, 3.0, 2.0, 1.0])
    started = workspace.runs / "started"
    started.mkdir()
    (started / "config.yaml").write_text("stage: dpo\nmethod: {name: full}\n")
    (started / "metrics.jsonl").write_text('{"step": 1, "loss": 0.69}\n')
    table = runs_tab.runs_table(workspace)
    rows = {row["run"]: row for row in table.to_dict("records")}
    assert rows["quickstart/sft"]["state"] == "finished" and rows["quickstart/sft"]["loss"] == 1.0
    assert rows["quickstart/sft"]["fit"] == "good fit" and rows["quickstart/sft"]["step"] == 4
    assert rows["started"]["state"] == "training" and rows["started"]["stage"] == "dpo"


def test_details_show_figures_plot_and_model_card(workspace):
    run = finished_run(workspace.runs / "sft", [2.0, 1.0])
    (run / "plots").mkdir()
    (run / "plots" / "loss.png").write_bytes(b"\x89PNG")
    (run / "final").mkdir()
    (run / "final" / "README.md").write_text("# sft\n\nTrained with `lmforge train`")
    details = runs_tab.run_details(workspace, str(run))
    assert "sft: finished" in details.summary and "| train_loss | 1 |" in details.summary
    assert "fit: **good fit**" in details.summary
    assert details.plot == str(run / "plots" / "loss.png") and "Trained with" in details.card
    assert list(details.curves["loss"]) == [2.0, 1.0]
    assert "stage: sft" in details.config
    assert "outside" in runs_tab.run_details(workspace, "/etc").summary


def test_two_runs_side_by_side(workspace):
    first = finished_run(workspace.runs / "a", [3.0, 2.0])
    second = finished_run(workspace.runs / "b", [3.0, 1.0, 0.5])
    comparison = runs_tab.compare_runs(workspace, str(first), str(second))
    rows = {row[""]: row for row in comparison.table.to_dict("records")}
    assert rows["train.max_steps"]["a"] == "2" and rows["train.max_steps"]["b"] == "3"  # a setting that differs
    assert "method.name" not in rows  # the same in both: not shown
    assert rows["last loss"]["a"] == "2.0" and rows["last loss"]["b"] == "0.5"
    assert set(comparison.curves["series"]) == {"a train", "b train"}

"""The Train tab's callbacks: the form generated from the config schema, the YAML it makes, launching,
and the live view of a run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lmforge.errors import ConfigError, UserInputError
from lmforge.ui import train_tab
from tests.ui.conftest import finished_run


def _values(ui_root, **changes):
    values = {
        "model.path": str(ui_root / "models" / "tiny"),
        "data.train": "builtin:arith-sft",
        "data.max_len": 64,
        "train.max_steps": 5,
        "train.micro_batch_size": 2,
    }
    values.update(changes)
    return values


def test_the_form_is_the_config_schema():
    from lmforge.train.config import TrainSection

    scheduler = train_tab.form_field("train.lr_scheduler")
    assert scheduler.kind == "choice" and scheduler.default == "cosine"
    assert scheduler.choices == ("linear", "cosine", "constant", "constant_with_warmup")
    assert scheduler.help == TrainSection.model_fields["lr_scheduler"].description
    max_steps = train_tab.form_field("train.max_steps")
    assert max_steps.optional and max_steps.kind == "integer"
    assert train_tab.form_field("model.path").kind == "path"
    assert train_tab.form_field("train.early_stopping.patience").optional
    assert train_tab.form_field("method.name").default == "lora"  # the form's own default (STYLE: said once, here)
    stages = train_tab.form_field("stage").choices
    assert set(stages) == {"pretrain", "sft", "rm", "dpo", "kto", "orpo", "rlhf", "distill", "classify", "mlm"}
    keys = [field.key for field in train_tab.all_fields()]
    assert len(keys) == len(set(keys)) and "rlhf.reward_model" in keys and "method.quant_bits" in keys
    # Every key of the schema is on the form (a key the config gains appears by itself), but the run name's `out`
    # and the two switches that would run code from a model's files.
    assert set(keys) == set(train_tab.schema_keys()) - {"out", "model.trust_pickle", "model.trust_remote_code"}
    assert train_tab.form_field("data.packing").choices == ("auto", "on", "off")
    report_to = train_tab.form_field("train.report_to")
    assert report_to.kind == "choices" and report_to.choices == ("tensorboard", "wandb") and report_to.default == []


def test_newer_config_keys_reach_the_yaml(workspace, ui_root):
    from lmforge.train.config import load_config

    values = _values(
        ui_root,
        **{
            "data.packing": "off",
            "train.loss": "chunked",
            "train.length_grouped": True,
            "data.on_error": "skip",
            "train.report_to": ["tensorboard"],
        },
    )
    loaded = load_config(train_tab.preview_config(workspace, "sft-new", values).download)
    assert loaded.data.packing == "off" and loaded.train.loss == "chunked" and loaded.train.length_grouped
    assert loaded.data.on_error == "skip" and loaded.train.report_to == ["tensorboard"]
    _name, back = train_tab.form_values(workspace, train_tab.preview_config(workspace, "sft-new", values).download)
    assert back["data.packing"] == "off" and back["train.report_to"] == ["tensorboard"]


def test_model_pickers_take_hub_ids_and_local_paths_stay_inside(workspace, ui_root):
    from lmforge.train.config import load_config

    values = _values(ui_root, **{"model.path": "org/tiny-model@v1", "distill.teacher": "org/teacher"})
    loaded = load_config(train_tab.preview_config(workspace, "from-hub", values).download)
    assert loaded.model.path == "org/tiny-model@v1" and loaded.distill.teacher == "org/teacher"
    refused = train_tab.preview_config(workspace, "x", _values(ui_root, **{"data.train": "org/data"}))
    assert "data.train: org/data is outside the folders this UI may use" in refused.message


def test_a_config_that_trusts_code_is_not_loaded_into_the_form(workspace, ui_root, tmp_path):
    import yaml

    written = train_tab.preview_config(workspace, "trusting", _values(ui_root)).download
    config = yaml.safe_load(Path(written).read_text())
    config["model"]["trust_remote_code"] = True
    path = tmp_path / "trusting.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(UserInputError, match="sets model.trust_remote_code: the UI never runs code"):
        train_tab.form_values(workspace, str(path))


def test_the_yaml_is_what_lmforge_train_reads(workspace, ui_root):
    from lmforge.train.config import load_config

    result = train_tab.preview_config(workspace, "sft-a", _values(ui_root, **{"train.eval_every": 0}))
    assert result.message == f"valid config for `{workspace.runs / 'sft-a'}`"
    loaded = load_config(result.download)
    assert loaded.out == str(workspace.runs / "sft-a") and loaded.model.path == str(ui_root / "models" / "tiny")
    assert loaded.method.name == "lora" and loaded.train.max_steps == 5 and loaded.train.eval_every is None
    assert loaded.train.save_every == 50 and loaded.train.learning_rate == 2e-4  # form default, library default


def test_a_yaml_loads_back_into_the_form(workspace, ui_root):
    from lmforge.train.config import load_config

    values = _values(
        ui_root,
        **{"method.name": "qlora", "data.tasks": "sort,count", "train.eval_every": 10, "model.dtype": "bfloat16"},
    )
    written = train_tab.preview_config(workspace, "nested/sft-b", values).download
    name, loaded = train_tab.form_values(workspace, written)
    assert name == "nested/sft-b"
    assert loaded["method.name"] == "qlora" and loaded["data.tasks"] == "sort,count"
    assert loaded["model.dtype"] == "bfloat16"
    assert loaded["train.eval_every"] == 10 and loaded["train.max_steps"] == 5 and loaded["data.eval"] is None
    again = train_tab.preview_config(workspace, name, loaded).download  # the form's values make the same config
    assert load_config(again) == load_config(written)


def test_every_problem_is_reported_at_once(workspace, ui_root):
    values = _values(ui_root, **{"data.train": "/etc/passwd", "train.learning_rate": 0, "stage": "rlhf"})
    with pytest.raises(ConfigError) as error:
        train_tab.config_from_form(workspace, "bad", values)
    message = str(error.value)
    assert "data.train: /etc/passwd is outside the folders this UI may use" in message
    assert "train.learning_rate" in message and "rlhf.reward_model" in message
    assert train_tab.preview_config(workspace, "bad", values).message.startswith("**Error:** invalid config:")


def test_launch_refuses_to_overwrite_a_finished_run(workspace, ui_root):
    finished_run(workspace.runs / "done", [1.0, 0.5])
    (workspace.runs / "done" / "final").mkdir()
    result = train_tab.launch_from_form(workspace, "done", _values(ui_root))
    assert "already holds a run" in result.message and result.message.startswith("**Error:**")


def test_a_launched_run_that_fails_shows_its_one_line_error(workspace, ui_root):
    broken_data = {"data.train": str(ui_root / "data" / "chats.jsonl")}
    result = train_tab.launch_from_form(workspace, "broken", _values(ui_root, **broken_data))
    assert result.message.startswith("launched **broken**")
    run = str(workspace.runs / "broken")
    deadline = time.monotonic() + 240
    while "failed" not in (view := train_tab.live_view(workspace, run)).status:
        assert time.monotonic() < deadline, view.log
        time.sleep(1)
    assert "failed (exit code 2)" in view.status
    assert "**Error: " in view.status and "chats.jsonl:2: invalid JSON" in view.status
    assert "Error: " in view.log


def test_the_live_view_of_a_finished_run(workspace):
    run = finished_run(workspace.runs / "done", [4.0, 3.0, 2.0, 1.0], eval_losses=[3.5, 1.5])
    view = train_tab.live_view(workspace, str(run))
    assert "finished (started outside the UI)" in view.status and "step **4** of 4 (100%)" in view.status
    assert "fit: good fit: fell" in view.status
    assert list(view.curves["series"]) == ["train"] * 4 + ["validation"] * 2
    empty = workspace.runs / "new"
    empty.mkdir()
    (empty / "config.yaml").write_text("stage: sft\n")
    assert train_tab.live_view(workspace, str(empty)).curves is None  # no empty frame: see live_view
    assert "outside" in train_tab.live_view(workspace, "/etc").status


def test_resume_needs_a_complete_checkpoint(workspace):
    run = finished_run(workspace.runs / "no-checkpoint", [1.0])
    (run / "config.yaml").write_text(f"stage: sft\nout: {run}\nmodel: {{path: {run}}}\n")
    (run / "config.json").write_text("{}")  # a model folder, so the config's sources exist
    assert "holds no complete checkpoint" in train_tab.resume_run(workspace, str(run))
    assert "not training from this UI" in train_tab.stop_run(workspace, str(run))

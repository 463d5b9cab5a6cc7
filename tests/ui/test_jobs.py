"""lmforge.ui.jobs: `lmforge train` detached from the UI, its exit code kept, Stop, and the live figures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lmforge.errors import UserInputError
from lmforge.ui import jobs
from tests.ui.conftest import finished_run


def _wait_until_not_alive(run_dir: Path, seconds: float = 60.0) -> jobs.RunState:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = jobs.run_state(run_dir)
        if not state.alive:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} still running after {seconds} s: {jobs.log_tail(run_dir)}")


def test_a_failed_run_shows_its_one_line_error_and_exit_code(tmp_path):
    run_dir = tmp_path / "bad"
    # A config `lmforge train` itself refuses: the process starts, prints its one-line error and exits 2.
    state = jobs.launch("stage: sft\nout: " + str(run_dir) + "\ntrain: {max_steps: 0}\n", run_dir)
    assert state.state == "running" and state.from_ui
    ended = _wait_until_not_alive(run_dir)
    assert ended.state == "failed" and "exit code 2" in ended.detail
    assert ended.error.startswith("Error: invalid config:") and "train.max_steps" in ended.error
    assert "\n" not in ended.error


def test_a_run_lives_in_its_own_session_and_stop_ends_its_whole_process_group(tmp_path, ui_root):
    import psutil

    run_dir = tmp_path / "long"
    config = f"stage: sft\nout: {run_dir}\nmodel: {{path: {ui_root / 'models' / 'tiny'}}}\n"
    state = jobs.launch(config, run_dir)  # a real run, stopped while it is still starting
    # A new session: Ctrl-C in the UI's terminal, or the UI exiting, sends it nothing.
    assert os.getsid(state.pid) == state.pid != os.getsid(0)
    with pytest.raises(UserInputError, match="already training"):
        jobs.launch("stage: sft\n", run_dir)
    group = [state.pid] + [child.pid for child in psutil.Process(state.pid).children(recursive=True)]
    stopped = jobs.stop(run_dir)
    assert stopped.state == "stopped"
    assert _wait_until_not_alive(run_dir).state == "stopped"
    time.sleep(0.5)
    assert not [pid for pid in group if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(UserInputError, match="not training from this UI"):
        jobs.stop(run_dir)


def test_resume_needs_a_run_that_started(tmp_path):
    with pytest.raises(UserInputError, match="nothing was started there to resume"):
        jobs.launch("", tmp_path / "never", resume=True)
    assert not (tmp_path / "never").exists()  # nothing written for a refused resume


def test_a_process_that_vanished_without_an_exit_code_is_interrupted(tmp_path):
    from lmforge.fileio import atomic_write_json

    run_dir = tmp_path / "gone"
    (run_dir / "ui").mkdir(parents=True)
    (run_dir / "ui" / "train.log").write_text("train ━━━ 3/10\nKilled\n")
    atomic_write_json(run_dir / "ui" / "job.json", {"pid": 2**22 + 17, "started": 1.0, "command": []})
    state = jobs.run_state(run_dir)
    assert state.state == "interrupted" and state.error == "Killed"


def test_runs_started_elsewhere_are_read_from_their_files(tmp_path):
    done = finished_run(tmp_path / "done", [3.0, 2.0, 1.5, 1.0])
    assert jobs.run_state(done).state == "finished" and not jobs.run_state(done).from_ui
    active = tmp_path / "active"
    active.mkdir()
    (active / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert jobs.run_state(active).state == "training"
    old = time.time() - 2 * jobs.ACTIVE_SECONDS
    os.utime(active / "metrics.jsonl", (old, old))
    assert jobs.run_state(active).state == "incomplete"


def test_progress_gives_the_curves_rates_eta_and_diagnosis(tmp_path):
    run_dir = finished_run(tmp_path / "run", [4.0, 3.0, 2.0, 1.0], eval_losses=[3.5, 1.5])
    (run_dir / "result.json").unlink()  # still training: the diagnosis comes from the curves so far
    (run_dir / "config.yaml").write_text("stage: sft\ntrain: {max_steps: 10}\n")
    figures = jobs.progress(run_dir)
    assert figures.train_loss == [(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)]
    assert figures.eval_loss == [(2, 3.5), (4, 1.5)]
    assert figures.step == 4 and figures.total_steps == 10 and figures.fraction == pytest.approx(0.4)
    assert figures.tokens_per_second == pytest.approx(100.0)  # 300 tokens in 3 s
    assert figures.eta_seconds == pytest.approx(6.0)  # 6 steps left at 1 s each
    assert figures.diagnosis.startswith("good fit")

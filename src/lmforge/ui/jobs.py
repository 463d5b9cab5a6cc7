"""Training runs started from the browser, and the live state of every run folder.

A run is `lmforge train` itself, started as its own process in a new session (its own process group),
so closing the tab, the browser or even stopping the UI server does not stop it: the browser only ever
reads files the run writes. A small `sh` wrapper records the exit code when the process ends, so a
UI started later still knows how a run ended. What the UI adds to a run folder:

    RUN/ui/train.yaml   the config the form made (the first launch; --resume uses RUN/config.yaml)
    RUN/ui/train.log    the process's stdout and stderr (its one-line `Error: ...` on failure)
    RUN/ui/job.json     pid, process start time, command
    RUN/ui/exit_code    written by the wrapper when the process ends
    RUN/ui/stopped      the user pressed Stop (the process group got SIGTERM)

Runs started from the command line have no ui/ folder; their state comes from what `lmforge train`
writes (result.json when finished, metrics.jsonl while it trains).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import UserInputError
from lmforge.fileio import atomic_write_json, atomic_write_text

# The wrapper: run the command ("$@"), then write its exit code atomically to $0 (the exit_code file).
_WRAPPER = 'code=0; "$@" || code=$?; printf "%s\\n" "$code" > "$0.tmp" && mv "$0.tmp" "$0"; exit "$code"'
# A run started elsewhere counts as training while its metrics.jsonl changed this recently.
ACTIVE_SECONDS = 120.0


def ui_folder(run_dir: Path) -> Path:
    return run_dir / "ui"


@dataclass(frozen=True)
class RunState:
    """What a run is doing: running, finished, failed, stopped, interrupted; started elsewhere: training, incomplete."""

    state: str
    detail: str  # one line for people
    error: str | None = None  # a failed run's one-line error
    pid: int | None = None
    from_ui: bool = False  # started by this UI (so it can be stopped here)
    started: float | None = None  # when the UI started its process (rates are measured from there)

    @property
    def alive(self) -> bool:
        return self.state in ("running", "training")


def launch(config_yaml: str, run_dir: Path, *, resume: bool = False) -> RunState:
    """Start `lmforge train` on `config_yaml` (a YAML text) into `run_dir`, detached; or resume the run there.

    A first launch writes RUN/ui/train.yaml; a resume continues from RUN/config.yaml, which every run
    (UI or command line) writes as it starts, so runs started elsewhere can be resumed here too.
    """
    state = run_state(run_dir)
    if state.alive:
        raise UserInputError(f"{run_dir.name} is already training (pid {state.pid}); stop it first")
    folder = ui_folder(run_dir)
    if resume:
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise UserInputError(f"{run_dir} has no config.yaml: nothing was started there to resume")
        folder.mkdir(exist_ok=True)
    else:
        config_path = atomic_write_text(folder / "train.yaml", config_yaml)
    for stale in ("exit_code", "stopped"):
        (folder / stale).unlink(missing_ok=True)
    command = [sys.executable, "-m", "lmforge", "train", str(config_path)] + (["--resume"] if resume else [])
    with open(folder / "train.log", "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, str(folder / "exit_code"), *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: no signal aimed at the UI reaches it
        )
    atomic_write_json(
        folder / "job.json",
        {"pid": process.pid, "started": _create_time(process.pid), "command": command, "resume": resume},
    )
    return RunState("running", f"started (pid {process.pid})", pid=process.pid, from_ui=True)


def stop(run_dir: Path) -> RunState:
    """Stop a run this UI started (SIGTERM to its process group); checkpoints already written stay complete."""
    state = run_state(run_dir)
    if not state.from_ui or not state.alive or state.pid is None:
        raise UserInputError(
            f"{run_dir.name} is not training from this UI ({state.detail}); "
            "a run started from the command line is stopped where it runs"
        )
    atomic_write_text(ui_folder(run_dir) / "stopped", time.strftime("%Y-%m-%d %H:%M:%S\n"))
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(state.pid, signal.SIGTERM)
    _reap(state.pid)
    return RunState(
        "stopped",
        "stopped by the user: Resume continues from its last complete checkpoint",
        pid=state.pid,
        from_ui=True,
    )


def run_state(run_dir: Path) -> RunState:
    """The state of the run in `run_dir`, from its files and (for a UI run) its process."""
    folder = ui_folder(run_dir)
    job = _read_json(folder / "job.json")
    finished = (run_dir / "result.json").is_file()
    if job is None:  # started from the command line (or never started)
        metrics = run_dir / "metrics.jsonl"
        if finished:
            return RunState("finished", "finished (started outside the UI)")
        if metrics.is_file() and time.time() - metrics.stat().st_mtime < ACTIVE_SECONDS:
            return RunState("training", "training (started outside the UI)")
        return RunState("incomplete", "no result yet and no recent metrics (started outside the UI)")
    pid = int(job["pid"])
    exit_file = folder / "exit_code"
    stopped = RunState(
        "stopped", "stopped by the user: Resume continues from its last complete checkpoint", pid=pid, from_ui=True
    )
    if exit_file.is_file():
        _reap(pid)
        code = exit_file.read_text().strip()
        if code == "0":
            return RunState("finished", "finished", pid=pid, from_ui=True)
        if (folder / "stopped").is_file():  # the wrapper outlived the SIGTERM and recorded the trainer's 143
            return stopped
        return RunState("failed", f"failed (exit code {code})", error=last_error(run_dir), pid=pid, from_ui=True)
    if _alive(pid, job.get("started")):
        return RunState("running", f"running (pid {pid})", pid=pid, from_ui=True, started=job.get("started"))
    if (folder / "stopped").is_file():
        return stopped
    return RunState(
        "interrupted",
        "the process ended without an exit code (killed, or the machine restarted)",
        error=last_error(run_dir),
        pid=pid,
        from_ui=True,
    )


def last_error(run_dir: Path) -> str | None:
    """The run's one-line `Error: ...` (what the CLI prints for any lmforge error), else the log's last line."""
    log = ui_folder(run_dir) / "train.log"
    if not log.is_file():
        return None
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    if errors:
        return errors[-1]
    return lines[-1][:500] if lines else None


def log_tail(run_dir: Path, lines: int = 30) -> str:
    """The last lines of the run's log (progress bars' carriage returns folded), for the live view."""
    log = ui_folder(run_dir) / "train.log"
    if not log.is_file():
        return ""
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 64_000))
        text = handle.read().decode("utf-8", errors="replace")
    kept = [line.split("\r")[-1] for line in text.splitlines()]
    return "\n".join(kept[-lines:])


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(pid: int, started: float | None) -> bool:
    """The recorded process is still running (not a zombie, and not another process that reused its pid)."""
    import psutil

    _reap(pid)
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 1.0:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so an ended run leaves no zombie behind."""
    with contextlib.suppress(ChildProcessError):  # not our child (the UI was restarted since), or collected
        os.waitpid(pid, os.WNOHANG)


@dataclass
class Progress:
    """What the live view shows for a run, read from its files (metrics.jsonl, config.yaml, plan.json, result.json)."""

    records: list[dict[str, Any]]
    train_loss: list[tuple[int, float]]
    eval_loss: list[tuple[int, float]]
    step: int
    total_steps: int | None  # train.max_steps, when the config sets it
    fraction: float | None  # of the run done (steps, else epochs)
    tokens_per_second: float | None  # over the last logged steps
    eta_seconds: float | None
    checkpoints: int
    planned_bytes: int | None  # the planner's per-GPU peak for this run (plan.json)
    planned_gpu: str | None
    measured_bytes: int | None  # torch.cuda.max_memory_allocated (GPU runs, in plan.json when finished)
    resident_bytes: int | None  # the training process's RSS now (CPU memory, while it runs)
    diagnosis: str | None  # the fit diagnosis: result.json's when finished, else from the curves so far


def progress(run_dir: Path, state: RunState | None = None, window: int = 10) -> Progress:
    """The run's curves and figures; rates over the last `window` logged steps."""
    import yaml

    from lmforge.train.callbacks import read_metrics
    from lmforge.train.checkpoints import list_checkpoints
    from lmforge.train.plots import curves, diagnose

    records = read_metrics(run_dir / "metrics.jsonl")
    train, val = curves(records)
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    settings = config.get("train") or {}
    step = max((int(r.get("step", 0)) for r in records), default=0)
    total = settings.get("max_steps")
    epoch = max((float(r["epoch"]) for r in records if r.get("epoch") is not None), default=0.0)
    fraction = step / total if total else (epoch / float(settings.get("epochs") or 1.0) if epoch else None)

    since = state.started if state is not None and state.started else 0.0  # not across a stop and resume
    timed = [r for r in records if "loss" in r and r.get("time", 0.0) >= since][-window:]
    tokens_per_second = eta = None
    if len(timed) >= 2 and timed[-1]["time"] > timed[0]["time"]:
        seconds = timed[-1]["time"] - timed[0]["time"]
        tokens = timed[-1].get("tokens_seen", 0) - timed[0].get("tokens_seen", 0)
        tokens_per_second = tokens / seconds if tokens > 0 else None
        steps = timed[-1]["step"] - timed[0]["step"]
        if steps > 0 and fraction is not None and 0 < fraction < 1:
            seconds_per_step = seconds / steps
            remaining = (total - step) if total else step * (1 - fraction) / fraction
            eta = remaining * seconds_per_step

    plan = _read_json(run_dir / "plan.json") or {}
    planner = plan.get("planner") or {}
    result = _read_json(run_dir / "result.json")
    if result and result.get("diagnosis"):
        diagnosis = f"{result['diagnosis']['verdict']}: {result['diagnosis']['reason']}"
    else:
        verdict = diagnose(train, val)
        diagnosis = f"{verdict.verdict}: {verdict.reason}"
    return Progress(
        records=records,
        train_loss=train,
        eval_loss=val,
        step=step,
        total_steps=total,
        fraction=fraction,
        tokens_per_second=tokens_per_second,
        eta_seconds=eta,
        checkpoints=len(list_checkpoints(run_dir / "checkpoints")),
        planned_bytes=(planner.get("memory") or {}).get("per_gpu_bytes"),
        planned_gpu=(planner.get("gpu") or {}).get("name"),
        measured_bytes=(plan.get("actual") or {}).get("peak_memory_bytes"),
        resident_bytes=_resident_bytes(state.pid) if state is not None and state.alive and state.pid else None,
        diagnosis=diagnosis,
    )


def _resident_bytes(pid: int) -> int | None:
    """RSS of the process and its children (the wrapper's `lmforge train`, accelerate's ranks)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return None

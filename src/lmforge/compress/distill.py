"""`lmforge compress distill`: the training stage `distill` (lmforge.train.distill: a student learns the
teacher's logits, Hinton et al. 2015), then the quality report with the teacher as the original and the
student beside it, measured in the same run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError


def distill(
    config: str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    report_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[Any, Any]:
    """Train the `distill` config (a YAML path, with `--set`-style overrides) and report teacher vs student.

    Returns (RunResult, QualityReport); the report is also written to `report_dir` (default RUN/compress-report).
    """
    from lmforge.compress.report import compare, write_quality_report
    from lmforge.train.config import load_config
    from lmforge.train.run import run_training

    train_config = load_config(Path(config), overrides)
    if train_config.stage != "distill":
        raise ConfigError(f"{config} is a {train_config.stage!r} config; compress distill runs stage: distill")
    teacher = train_config.distill.teacher
    assert teacher is not None  # load_config refuses a distill config without distill.teacher
    result = run_training(train_config, progress=progress)
    report = compare(teacher, [(str(result.final_dir), "distill-student")], **(report_options or {}))
    write_quality_report(report, report_dir or result.run_dir / "compress-report")
    return result, report

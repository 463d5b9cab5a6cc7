"""The error policy for bad records: fail with the first problems listed, or skip them, count
them by reason and keep them in a rejects file. Nothing is ever dropped silently.

The loader finds the problems (kinds.normalise_record says what is wrong, the reader says
where); this module decides what happens next and keeps the books: records in == records out
+ rejected + duplicates removed, asserted on every load.
"""

from __future__ import annotations

import json
import typing
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

from lmforge.data.kinds import CLI_OPTIONS, OptionNames, RecordProblem
from lmforge.errors import UserInputError

OnError = Literal["fail", "skip"]
MAX_LISTED_PROBLEMS = 20


def on_error_policy(value: str) -> OnError:
    """`value` (what the user typed for --on-error) as a policy, or the one-line error for any other spelling:
    commands check it before they load anything, even for data that has no bad records to apply it to."""
    for policy in typing.get_args(OnError):
        if value == policy:
            return policy
    raise UserInputError(f"--on-error must be 'fail' or 'skip', not '{value}'")


@dataclass
class ValidationReport:
    """What a load did with every record it read."""

    records_in: int = 0
    records_out: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # the first MAX_LISTED_PROBLEMS, "file:line: reason"
    rejects_path: str | None = None
    duplicates_removed: int = 0

    def check_counts(self) -> None:
        """The books must balance; a mismatch is a bug in lmforge, never the user's fault."""
        accounted = self.records_out + self.rejected + self.duplicates_removed
        assert self.records_in == accounted, f"records in {self.records_in} != out + rejected + removed {accounted}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _StopLoading(Exception):
    """Raised inside the record stream when fail-mode has seen enough problems to report."""


class ProblemCollector:
    """Applies the on_error policy to each bad record as the loader meets it."""

    def __init__(
        self,
        on_error: OnError,
        report: ValidationReport,
        rejects: IO[str] | None = None,
        names: OptionNames = CLI_OPTIONS,
    ) -> None:
        self.on_error = on_error_policy(on_error)
        self.report = report
        self.rejects = rejects
        self.names = names
        self.reasons: Counter[str] = Counter()

    def reject(self, location: str, problem: RecordProblem, raw: Any) -> None:
        self.report.rejected += 1
        self.reasons[problem.reason] += 1
        if len(self.report.problems) < MAX_LISTED_PROBLEMS:
            self.report.problems.append(f"{location}: {problem}")
        if self.rejects is not None:
            line = {"location": location, "reason": problem.reason, "detail": str(problem), "record": raw}
            self.rejects.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        if self.on_error == "fail" and len(self.report.problems) >= MAX_LISTED_PROBLEMS:
            raise _StopLoading

    def finish(self, source: str, stopped_early: bool = False) -> None:
        """Raise the one fail-mode error listing the problems, or record the skip counts."""
        self.report.rejected_by_reason = dict(self.reasons.most_common())
        if self.on_error == "fail" and self.report.problems:
            count = (
                f"stopped at the first {MAX_LISTED_PROBLEMS} bad records"
                if stopped_early
                else f"{self.report.rejected} bad record{'s' if self.report.rejected != 1 else ''}"
            )
            listed = "; ".join(self.report.problems)
            raise UserInputError(f"{source}: {count} ({self.names.skip}): {listed}")


def problem_summary(report: ValidationReport) -> str:
    """One line for skip mode: how many were dropped and why."""
    if not report.rejected:
        return f"{report.records_out} records, none rejected"
    reasons = ", ".join(f"{count} {reason}" for reason, count in report.rejected_by_reason.items())
    where = f"; rejects in {report.rejects_path}" if report.rejects_path else ""
    return f"kept {report.records_out} of {report.records_in} records, skipped {report.rejected} ({reasons}){where}"

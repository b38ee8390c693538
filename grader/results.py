"""The in-memory result model every report is written from."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["passed", "failed", "skipped", "error"]


@dataclass
class CheckResult:
    """One check of one submission. `points` is 0 unless the check passed."""

    check_id: str
    title: str
    status: Status
    points: float
    max_points: float
    message: str = ""
    log_excerpt: str = ""
    duration_s: float = 0.0


@dataclass
class WrongDigit:
    """A hidden digit the served model got wrong, kept as a PNG for the HTML report."""

    index: int
    label: int
    predicted: int
    png_base64: str


@dataclass
class SubmissionResult:
    submission_id: str
    path: str
    artifacts: str
    student_name: str | None = None
    checks: dict[str, CheckResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # integrity concerns for a TA to look at
    measurements: dict[str, Any] = field(default_factory=dict)
    training_curve: dict[str, list[float]] = field(default_factory=dict)
    wrong_digits: list[WrongDigit] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(check.points for check in self.checks.values())

    @property
    def max_score(self) -> float:
        return sum(check.max_points for check in self.checks.values())

    @property
    def infrastructure_errors(self) -> list[str]:
        """Checks the harness or the engine could not run: not the student's, graded again."""
        return [check.check_id for check in self.checks.values() if check.status == "error"]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def flag(self, text: str) -> None:
        if text not in self.flags:
            self.flags.append(text)


@dataclass
class GradingReport:
    run_id: str
    profile: str
    rubric: str
    harness_version: str
    started_at: float = field(default_factory=time.time)
    submissions: dict[str, SubmissionResult] = field(default_factory=dict)

    def submission(self, submission_id: str, path: Path, artifacts: Path) -> SubmissionResult:
        if submission_id not in self.submissions:
            self.submissions[submission_id] = SubmissionResult(
                submission_id, str(path), str(artifacts)
            )
        return self.submissions[submission_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "profile": self.profile,
            "rubric": self.rubric,
            "harness_version": self.harness_version,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "submissions": {sid: submission_to_json(r) for sid, r in self.submissions.items()},
        }


def submission_to_json(result: SubmissionResult) -> dict[str, Any]:
    return {
        "submission_id": result.submission_id,
        "student_name": result.student_name,
        "path": result.path,
        "artifacts": result.artifacts,
        "score": result.score,
        "max_score": result.max_score,
        "notes": result.notes,
        "flags": result.flags,
        "measurements": result.measurements,
        "training_curve": result.training_curve,
        "wrong_digits": [asdict(digit) for digit in result.wrong_digits],
        "checks": {cid: asdict(check) for cid, check in result.checks.items()},
    }


def submission_from_json(data: dict[str, Any]) -> SubmissionResult:
    """The inverse of the per-submission part of `GradingReport.to_json`."""
    return SubmissionResult(
        submission_id=data["submission_id"],
        path=data["path"],
        artifacts=data["artifacts"],
        student_name=data.get("student_name"),
        checks={cid: CheckResult(**check) for cid, check in data["checks"].items()},
        notes=list(data.get("notes", [])),
        flags=list(data.get("flags", [])),
        measurements=dict(data.get("measurements", {})),
        training_curve=dict(data.get("training_curve", {})),
        wrong_digits=[WrongDigit(**digit) for digit in data.get("wrong_digits", [])],
    )

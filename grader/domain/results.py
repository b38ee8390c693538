"""The in-memory result model every report is written from."""

from __future__ import annotations

import calendar
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from grader.domain.reasons import Fact, Reason

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
    withheld_by: list[str] = field(default_factory=list)  # flags withholding a pass's points
    # Why it failed, as data: a code of grader/domain/reasons.py and its facts ("" and {} when
    # it did not fail, or failed before reasons were recorded).
    reason: str = ""
    facts: dict[str, Fact] = field(default_factory=dict)

    def failed_for(self, why: Reason | None) -> None:
        """Record why the check failed (or forget it, with None)."""
        self.reason = why.code if why else ""
        self.facts = dict(why.facts) if why else {}


@dataclass
class WrongDigit:
    """A hidden digit the served model got wrong, kept as a PNG for the HTML report."""

    index: int
    label: int
    predicted: int
    png_base64: str


@dataclass
class Flag:
    """An integrity concern for a TA to look at.

    `id` is stable within the submission ("served-model", "reported-accuracy", ...), so that a
    TA's clearing survives re-scoring; `checks` are the checks whose points it puts in doubt.
    """

    id: str
    message: str
    checks: list[str] = field(default_factory=list)
    cleared: bool = False


@dataclass
class SubmissionResult:
    submission_id: str
    path: str
    artifacts: str
    student_name: str | None = None
    checks: dict[str, CheckResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    integrity_flags: list[Flag] = field(default_factory=list)  # raised, cleared ones included
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

    @property
    def flags(self) -> list[str]:
        """The messages of the flags a TA has not cleared: what reports show."""
        return [flag.message for flag in self.integrity_flags if not flag.cleared]

    def flag(self, text: str, flag_id: str | None = None) -> None:
        if any(flag.message == text for flag in self.integrity_flags):
            return
        taken = {flag.id for flag in self.integrity_flags}
        flag_id = flag_id or f"flag-{len(self.integrity_flags) + 1}"
        while flag_id in taken:
            flag_id += "+"
        self.integrity_flags.append(Flag(flag_id, text))


@dataclass
class GradingReport:
    run_id: str
    profile: str
    rubric: str
    harness_version: str
    started_at: float = field(default_factory=time.time)
    seed: int | None = None  # drew the hidden digits; `--seed` with it sends the same ones again
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
            "seed": self.seed,
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
        "integrity_flags": [asdict(flag) for flag in result.integrity_flags],
        "measurements": result.measurements,
        "training_curve": result.training_curve,
        "wrong_digits": [asdict(digit) for digit in result.wrong_digits],
        "checks": {cid: check_to_json(check) for cid, check in result.checks.items()},
    }


def check_to_json(check: CheckResult) -> dict[str, Any]:
    """A check as results.json holds it: no reason or facts when there are none, so that results
    stored before checks had reasons are written again byte for byte."""
    document = asdict(check)
    for key in ("reason", "facts"):
        if not document[key]:
            del document[key]
    return document


def submission_from_json(data: dict[str, Any]) -> SubmissionResult:
    """The inverse of the per-submission part of `GradingReport.to_json`."""
    return SubmissionResult(
        submission_id=data["submission_id"],
        path=data["path"],
        artifacts=data["artifacts"],
        student_name=data.get("student_name"),
        checks={cid: CheckResult(**check) for cid, check in data["checks"].items()},
        notes=list(data.get("notes", [])),
        integrity_flags=_flags_from_json(data),
        measurements=dict(data.get("measurements", {})),
        training_curve=dict(data.get("training_curve", {})),
        wrong_digits=[WrongDigit(**digit) for digit in data.get("wrong_digits", [])],
    )


def _flags_from_json(data: dict[str, Any]) -> list[Flag]:
    if "integrity_flags" in data:
        return [Flag(**flag) for flag in data["integrity_flags"]]
    # Results written before flags had ids: number them in order.
    return [Flag(f"flag-{n}", text) for n, text in enumerate(data.get("flags", []), 1)]


def report_from_json(data: dict[str, Any]) -> GradingReport:
    """A whole `results.json` read back, e.g. to rewrite the reports after a TA's decision."""
    started = time.strptime(data["started_at"], "%Y-%m-%dT%H:%M:%SZ")
    report = GradingReport(
        run_id=data["run_id"],
        profile=data["profile"],
        rubric=data["rubric"],
        harness_version=data["harness_version"],
        started_at=float(calendar.timegm(started)),
        seed=data.get("seed"),
    )
    for submission_id, result in data["submissions"].items():
        report.submissions[submission_id] = submission_from_json(result)
    return report

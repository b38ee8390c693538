"""The results of one grading run: a record per submission, stored results taken instead of
grading unchanged submissions again, check outcomes recorded, and the reports written.

With pytest-xdist, workers record results and send them with each test report; only the
controlling process keeps the run's report and writes the files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from grader.domain.dataset import Dataset
from grader.domain.handins import Intake, refused_result, start_result
from grader.domain.reasons import Reason
from grader.domain.results import (
    CheckResult,
    GradingReport,
    Status,
    SubmissionResult,
    submission_from_json,
    submission_to_json,
)
from grader.domain.rubric import Profile, Rubric
from grader.domain.verdicts import review
from grader.reports.files import write_reports, write_results
from grader.reports.reuse import Partition, partition
from grader.reports.store import store as store_result

RESULT_PROPERTY = "lab5-grader.result"
FINISHED_PROPERTY = "lab5-grader.finished"


class RunResults:
    """Every submission's result record in this process, and the run's reports."""

    def __init__(
        self,
        report: GradingReport,
        rubric: Rubric,
        profile: Profile,
        report_dir: Path,
        cleared: dict[str, set[str]],
        controls: bool,
    ) -> None:
        self.report = report
        self.rubric = rubric
        self.profile = profile
        self.report_dir = report_dir
        self.cleared = cleared  # submission id -> flags a TA cleared
        self.controls = controls  # only the controlling process writes reports
        self.keys: dict[str, str] = {}  # submission id -> key of what its grading depends on
        self.reused: list[str] = []  # not graded: taken from stored results, or not taken in

    def result_for(self, intake: Intake) -> SubmissionResult:
        return start_result(self.report, intake, self.report_dir)

    def review(self, result: SubmissionResult) -> None:
        """Flags, "unverified" notes and points of a result, under this run's rubric."""
        cleared = self.cleared.get(result.submission_id, set())
        review(result, self.profile.targets, self.rubric.integrity_penalty, cleared)

    def take_stored(
        self, intakes: Iterable[Intake], dataset: Dataset, hidden: str | None, force: bool
    ) -> Partition:
        """Split the batch as every way of grading does: unchanged submissions' stored results
        (re-scored) and hand-ins not taken in (scored 0 with the reason) are not graded."""
        split = partition(list(intakes), self.report_dir, self.rubric, self.profile, dataset,
                          hidden=hidden, force=force, cleared=self.cleared)  # fmt: skip
        self.keys.update(split.keys)
        self.report.submissions.update(split.stored)  # their records exist: the order is kept
        for intake in split.refused:
            refused_result(self.report, intake, self.report_dir, self.rubric, self.profile,
                           self.cleared.get(intake.id, set()))  # fmt: skip
        self.reused = [*split.stored, *(intake.id for intake in split.refused)]
        return split

    def record(
        self,
        intake: Intake,
        check_id: str,
        outcome: tuple[Status, str, str],
        duration_s: float,
        reason: Reason | None = None,
    ) -> tuple[str, str]:
        """Record a check's outcome; the user property that carries the result to the
        controlling process (itself, when serial)."""
        status, message, log = outcome
        spec = self.rubric.checks[check_id]
        result = self.result_for(intake)
        result.checks[check_id] = CheckResult(
            check_id=check_id,
            title=spec.title,
            status=status,
            points=spec.points if status == "passed" else 0.0,
            max_points=spec.points,
            message=message,
            log_excerpt=log,
            duration_s=duration_s,
        )
        result.checks[check_id].failed_for(reason if status == "failed" else None)
        self.review(result)
        return RESULT_PROPERTY, json.dumps(submission_to_json(result))

    def receive(
        self,
        properties: Iterable[tuple[str, object]],
        finished: Callable[[SubmissionResult], None],
    ) -> None:
        """In the controlling process: take in the results a test report carries, store a
        finished submission's result, and write the reports."""
        for name, value in properties:
            if name == RESULT_PROPERTY:
                result = submission_from_json(json.loads(str(value)))
                self.report.submissions[result.submission_id] = result
                self.write()
            elif name == FINISHED_PROPERTY and str(value) in self.report.submissions:
                done = self.report.submissions[str(value)]
                if str(value) in self.keys:
                    store_result(self.report_dir, done, self.keys[str(value)])
                self.write(everything=True)
                finished(done)

    def write(self, everything: bool = False) -> None:
        if self.controls:
            (write_reports if everything else write_results)(self.report, self.report_dir)

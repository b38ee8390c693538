"""Lab step 1: Docker runs an alpine container, plainly and interactively."""

from __future__ import annotations

from grader.domain.reasons import reason
from grader.pytest_plugin.plugin import SubmissionGrading, check, fail_check


@check("env.alpine_run")
def test_alpine_run(grading: SubmissionGrading) -> None:
    step = grading.alpine_step("run")
    if not step.ok:
        fail_check(step.detail, step.transcript, reason("step-failed", detail=step.detail))


@check("env.alpine_interactive")
def test_alpine_interactive(grading: SubmissionGrading) -> None:
    step = grading.alpine_step("interactive")
    if not step.ok:
        fail_check(step.detail, step.transcript, reason("step-failed", detail=step.detail))

"""Edges of re-scoring a stored result (SPEC.md §5: a rubric change re-scores stored results
from their measurements): checks that did not end in a verdict keep their status, a failure
found again carries its reason, and held-out counts that are missing or tiny."""

from __future__ import annotations

from grader.domain.results import CheckResult, Status, SubmissionResult
from grader.domain.rubric import load_rubric
from grader.reports.store import rescore

RUBRIC = load_rubric()
OFFLINE = RUBRIC.profile("offline")


def _stored(check_id: str, status: Status, message: str, **measured: object) -> SubmissionResult:
    result = SubmissionResult("alice", "/s/alice", "/r/alice")
    result.checks[check_id] = CheckResult(check_id, "old title", status, 0.0, 1.0, message)
    result.measurements.update(measured)
    return result


def test_a_check_that_ended_in_an_infrastructure_error_is_not_judged_again():
    result = _stored(
        "serve.heldout_accuracy",
        "error",
        "the engine failed",
        heldout_accuracy=0.99,
        heldout_total=800,
    )
    check = rescore(result, RUBRIC, OFFLINE).checks["serve.heldout_accuracy"]
    assert (check.status, check.points, check.message) == ("error", 0.0, "the engine failed")


def test_a_failure_found_again_carries_its_reason_and_figures():
    target = OFFLINE.targets.reported_accuracy
    result = _stored(
        "train.reported_accuracy",
        "passed",
        "",
        reported_accuracy=target / 2,
        reported_accuracy_where="metrics.json",
    )
    check = rescore(result, RUBRIC, OFFLINE).checks["train.reported_accuracy"]
    assert check.status == "failed" and check.points == 0.0
    assert check.reason == "train.reported_accuracy/below-target"
    assert check.facts == {"accuracy": target / 2, "target": target}


def test_one_hidden_digit_answered_right_is_judged_again_and_passes():
    result = _stored(
        "serve.heldout_accuracy",
        "failed",
        "accuracy below an older target",
        heldout_accuracy=1.0,
        heldout_total=1,
    )
    check = rescore(result, RUBRIC, OFFLINE).checks["serve.heldout_accuracy"]
    assert (check.status, check.message, check.reason) == ("passed", "", "")
    assert check.points == RUBRIC.checks["serve.heldout_accuracy"].points


def test_an_accuracy_without_a_count_of_digits_leaves_the_failure_as_graded():
    result = _stored(
        "serve.heldout_accuracy", "failed", "every request failed", heldout_accuracy=0.0
    )
    check = rescore(result, RUBRIC, OFFLINE).checks["serve.heldout_accuracy"]
    assert (check.status, check.message, check.points) == ("failed", "every request failed", 0.0)

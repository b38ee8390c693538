"""Re-scoring a stored result with another rubric: points, targets and integrity flags."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from grader.domain.results import CheckResult, Status, SubmissionResult
from grader.domain.rubric import DEFAULT_RUBRIC, Rubric, load_rubric
from grader.reports.store import rescore


def rubric_with(tmp_path: Path, *changes: tuple[str, str]) -> Rubric:
    text = DEFAULT_RUBRIC.read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "rubric.toml"
    path.write_text(text)
    return load_rubric(path)


def stored(measurements: Mapping[str, object], **statuses: Status) -> SubmissionResult:
    """A stored result as grading left it: checks (given as train__run="passed") with the points
    and title an older rubric gave them."""
    result = SubmissionResult("alice", "/s/alice", "/r/alice")
    for name, status in statuses.items():
        check_id = name.replace("__", ".")
        points = 1.0 if status == "passed" else 0.0
        message = "" if status == "passed" else f"{check_id} {status} when graded"
        result.checks[check_id] = CheckResult(check_id, "old title", status, points, 1.0, message)
    result.measurements.update(measurements)
    return result


def test_points_and_titles_come_from_the_current_rubric(tmp_path):
    rubric = rubric_with(
        tmp_path, ('[checks."train.build"]\npoints = 10', '[checks."train.build"]\npoints = 30')
    )
    result = rescore(
        stored({}, train__build="passed", train__run="failed", serve__build="skipped"),
        rubric,
        rubric.profile("offline"),
    )
    build, run, serve = (result.checks[i] for i in ("train.build", "train.run", "serve.build"))
    assert (build.status, build.points, build.max_points) == ("passed", 30, 30)
    assert build.title == "The training image builds within the time limit"
    assert (run.status, run.points, run.max_points) == ("failed", 0, 10)
    assert run.message == "train.run failed when graded"  # not judged again: no target
    assert (serve.status, serve.points, serve.max_points) == ("skipped", 0, 10)
    assert result.score == 30


def test_the_reported_accuracy_is_judged_against_the_current_target(tmp_path):
    measured = {"reported_accuracy": 0.93, "reported_accuracy_where": "metrics.json"}
    raised = rubric_with(tmp_path, ("reported_accuracy = 0.90", "reported_accuracy = 0.95"))
    result = rescore(
        stored(measured, train__reported_accuracy="passed"), raised, raised.profile("offline")
    )
    check = result.checks["train.reported_accuracy"]
    assert (check.status, check.points) == ("failed", 0)
    assert (
        "0.9300" in check.message and "metrics.json" in check.message and "0.9500" in check.message
    )
    default = load_rubric()
    again = rescore(result, default, default.profile("offline"))
    check = again.checks["train.reported_accuracy"]
    assert (check.status, check.points, check.message) == ("passed", 10, "")


def test_the_heldout_accuracy_is_judged_again_unless_every_prediction_failed(tmp_path):
    measured = {"heldout_accuracy": 0.92, "heldout_total": 800, "heldout_errors": 0}
    raised = rubric_with(tmp_path, ("heldout_accuracy = 0.90", "heldout_accuracy = 0.95"))
    result = rescore(
        stored(measured, serve__heldout_accuracy="passed"), raised, raised.profile("offline")
    )
    check = result.checks["serve.heldout_accuracy"]
    assert (check.status, check.points) == ("failed", 0)
    assert "800 hidden digits is 0.9200" in check.message
    # No answer at all: lowering the target does not turn that into a pass.
    failed = {"heldout_accuracy": 0.0, "heldout_total": 800, "heldout_errors": 800}
    default = load_rubric()
    result = rescore(
        stored(failed, serve__heldout_accuracy="failed"), default, default.profile("offline")
    )
    check = result.checks["serve.heldout_accuracy"]
    assert (check.status, check.message) == ("failed", "serve.heldout_accuracy failed when graded")


def test_a_check_without_its_measurement_keeps_its_status():
    rubric = load_rubric()
    result = rescore(
        stored({}, train__reported_accuracy="failed"), rubric, rubric.profile("offline")
    )
    check = result.checks["train.reported_accuracy"]
    assert (check.status, check.message) == ("failed", "train.reported_accuracy failed when graded")


def test_integrity_flags_are_drawn_again_with_the_current_gap(tmp_path):
    measured = {"reported_accuracy": 0.99, "heldout_accuracy": 0.95, "heldout_total": 800}
    statuses: dict[str, Status] = {
        "train__reported_accuracy": "passed",
        "serve__heldout_accuracy": "passed",
    }
    default = load_rubric()  # offline: a gap of up to 0.10 raises nothing
    assert rescore(stored(measured, **statuses), default, default.profile("offline")).flags == []
    strict = rubric_with(tmp_path, ("integrity_gap = 0.10", "integrity_gap = 0.02"))
    result = rescore(stored(measured, **statuses), strict, strict.profile("offline"))
    assert [flag.id for flag in result.integrity_flags] == ["reported-accuracy"]
    assert "0.9900" in result.flags[0] and "0.9500" in result.flags[0]
    # And taken back when the rubric no longer calls for it.
    assert rescore(result, default, default.profile("offline")).flags == []

"""Stored results: unchanged submissions are not graded again; rubric changes re-score them."""

from __future__ import annotations

import json

import pytest

from grader.domain.rubric import DEFAULT_RUBRIC
from tests.cli import run_grader

pytestmark = pytest.mark.integration

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"


@pytest.fixture
def workspace(tmp_path):
    submission = tmp_path / "submissions" / "quick"
    (submission / "train").mkdir(parents=True)
    (submission / "train" / "Dockerfile").write_text(
        f"FROM {CUDA_BASE}\n"
        "CMD sh -c 'echo Test accuracy: 97.5%; echo w > $OUTPUT_DIR/mnist_cnn.pt'\n"
    )
    return tmp_path, submission


def grade(tmp_path, submission, *extra):
    done = run_grader(
        "grade", str(submission), "--report-dir", str(tmp_path / "reports"), *extra, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "reports" / "results.json").read_text())
    return done.stdout, results["submissions"]["quick"]


def rubric(tmp_path, old, new):
    path = tmp_path / "rubric.toml"
    text = DEFAULT_RUBRIC.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return str(path)


def test_unchanged_submissions_are_taken_from_stored_results(workspace):
    tmp_path, submission = workspace
    first_out, first = grade(tmp_path, submission)
    assert "taken from stored results" not in first_out
    assert first["checks"]["train.reported_accuracy"]["status"] == "passed"

    again_out, again = grade(tmp_path, submission, "--resume")
    assert "1 unchanged submission(s) taken from stored results" in again_out
    assert "13 deselected" in again_out  # every check of the one submission
    assert again == first

    forced_out, _ = grade(tmp_path, submission, "--force")
    assert "taken from stored results" not in forced_out

    (submission / "train" / "notes.txt").write_text("changed")
    changed_out, _ = grade(tmp_path, submission)
    assert "taken from stored results" not in changed_out


def test_a_rubric_change_in_points_or_targets_rescores_without_grading(workspace):
    tmp_path, submission = workspace
    grade(tmp_path, submission)
    points = rubric(
        tmp_path, '[checks."train.build"]\npoints = 10', '[checks."train.build"]\npoints = 30'
    )
    out, result = grade(tmp_path, submission, "--rubric", points)
    assert "1 unchanged submission(s) taken from stored results" in out
    assert result["checks"]["train.build"]["points"] == 30
    assert result["max_score"] == 120

    stricter = rubric(tmp_path, "reported_accuracy = 0.90", "reported_accuracy = 0.99")
    out, result = grade(tmp_path, submission, "--rubric", stricter)
    assert "taken from stored results" in out
    check = result["checks"]["train.reported_accuracy"]
    assert check["status"] == "failed" and check["points"] == 0
    assert (
        "reported accuracy 0.9750 (training log line 1: Test accuracy: 97.5%) is below the "
        "target 0.9900" in check["message"]
    )

    longer = rubric(tmp_path, "train_seconds = 900", "train_seconds = 901")
    out, _ = grade(tmp_path, submission, "--rubric", longer)
    assert "taken from stored results" not in out  # a limit changed: graded again

"""`grader grade` on the bundled examples and the reference, with the real engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grader.engine import connect
from tests.cli import run_grader

pytestmark = pytest.mark.integration

TRAIN_CHECKS = [
    "train.dockerfile",
    "train.build",
    "train.run",
    "train.reported_accuracy",
    "train.model_artifact",
]
# What each bundled example scores, as its README says: failed checks with a phrase of their
# message, skipped checks, and the total.
EXPECTED = {
    "reference": {"score": 40, "failed": {}, "skipped": []},
    "2023010001": {"score": 40, "failed": {}, "skipped": []},
    "broken-build": {
        "score": 5,
        "failed": {"train.build": "COPY failed: file not found in build context"},
        "skipped": ["train.run", "train.reported_accuracy", "train.model_artifact"],
    },
    "under-trained": {
        "score": 30,
        "failed": {"train.reported_accuracy": "is below the target 0.9000"},
        "skipped": [],
    },
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("reports")
    done = run_grader(
        "grade", "submissions", "reference", "--report-dir", str(report_dir),
        timeout=3600,
    )  # fmt: skip
    results = json.loads((report_dir / "results.json").read_text())
    return done, report_dir, results


def test_grading_exits_zero_whatever_the_scores(graded):
    done, _, _ = graded
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("submission_id", list(EXPECTED))
def test_each_example_scores_what_its_readme_says(graded, submission_id):
    _, _, results = graded
    result = results["submissions"][submission_id]
    expected = EXPECTED[submission_id]
    assert list(result["checks"]) == TRAIN_CHECKS
    for check_id, check in result["checks"].items():
        if check_id in expected["failed"]:
            assert check["status"] == "failed", check
            assert expected["failed"][check_id] in check["message"]
            assert check["points"] == 0
        elif check_id in expected["skipped"]:
            assert check["status"] == "skipped", check
            assert check["message"].startswith("skipped: ")
            assert check["points"] == 0
        else:
            assert check["status"] == "passed", check
            assert check["points"] == check["max_points"]
    assert (result["score"], result["max_score"]) == (expected["score"], 40)


def test_reported_accuracy_sources(graded):
    _, _, results = graded
    reference = results["submissions"]["reference"]["measurements"]
    student = results["submissions"]["2023010001"]["measurements"]
    assert reference["reported_accuracy_source"] == "metrics.json"
    assert student["reported_accuracy_source"].startswith("training log line")
    assert reference["reported_accuracy"] >= 0.9 and student["reported_accuracy"] >= 0.9


def test_artifacts_are_kept(graded):
    _, report_dir, results = graded
    reference = Path(results["submissions"]["reference"]["artifacts"])
    assert reference == report_dir / "artifacts" / "reference"
    assert "Successfully built" in (reference / "train-build.log").read_text()
    assert "Test set: Average loss" in (reference / "train.log").read_text()
    assert (reference / "mnist_cnn.pt").stat().st_size > 100_000
    assert json.loads((reference / "metrics.json").read_text())["test_accuracy"] >= 0.9
    broken = report_dir / "artifacts" / "broken-build"
    assert "requirements.txt" in (broken / "train-build.log").read_text()
    assert not (broken / "train.log").exists()


def test_standin_use_is_recorded(graded):
    _, _, results = graded
    notes = results["submissions"]["2023010001"]["notes"]
    client = connect()
    image = client.images.get("pytorch/pytorch:2.0.1-cuda11.7-cudnn8-runtime")
    if "lab5-grader.standin" in image.labels:
        assert any("offline stand-in 'pytorch'" in note for note in notes), notes


def test_junit_report(graded, junit_schema):
    _, report_dir, _ = graded
    tree = junit_schema((report_dir / "junit.xml").read_text())
    suites = {suite.get("name"): suite for suite in tree.findall("testsuite")}
    assert set(suites) == set(EXPECTED)
    broken = suites["broken-build"]
    score = {p.get("name"): p.get("value") for p in broken.find("properties")}
    assert (score["score"], score["max_score"]) == ("5", "40")
    build = broken.find("testcase[@name='train.build']")
    assert "COPY failed" in build.find("failure").get("message")
    assert "requirements.txt" in build.find("failure").text


def test_terminal_summary(graded):
    done, _, _ = graded
    lines = done.stdout.splitlines()
    table = lines[
        next(i for i, line in enumerate(lines) if "lab5-grader: profile offline" in line) :
    ]
    assert any(line.split()[:2] == ["under-trained", "30/40"] for line in table)
    assert any(line.split()[:3] == ["reference", "40/40", "-"] for line in table)


def test_nothing_is_left_behind(graded):
    _, _, results = graded
    client = connect()
    selector = {"label": f"lab5-grader.run={results['run_id']}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.images.list(filters=selector) == []

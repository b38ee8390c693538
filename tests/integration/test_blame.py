"""Ours vs theirs, through the plugin: what escapes a check is recorded for whom it belongs to, and
the batch goes on."""

from __future__ import annotations

import json

import pytest

from grader.domain.settings import Settings

GRADER_HOME = Settings.from_env().home

CHECKS = """
import docker.errors
import requests

from grader.pytest_plugin.plugin import check
from grader.domain.rubric import DEFAULT_RUBRIC, load_rubric


def engine_answer(status, explanation):
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("engine", response, explanation=explanation)


RAISES = {
    "train.dockerfile": AssertionError("training_run needs a successful training build"),
    "train.build": engine_answer(500, "layer commit failed: no space left on device"),
    "train.run": engine_answer(400, 'exec: "python": executable file not found in $PATH'),
    "train.reported_accuracy": requests.exceptions.ConnectionError("dockerd went away"),
}


def make(check_id):
    def test(grading):
        if check_id in RAISES:
            raise RAISES[check_id]

    return check(check_id)(test)


for number, check_id in enumerate(load_rubric(DEFAULT_RUBRIC).checks):
    globals()[f"test_{number}"] = make(check_id)
"""


@pytest.mark.integration
def test_faults_are_told_apart_and_the_batch_goes_on(pytester, monkeypatch):
    monkeypatch.setenv("GRADER_HOME", str(GRADER_HOME))  # pytester moves HOME
    for name in ("alice", "bob"):
        pytester.mkdir(name).joinpath("train").mkdir()
    pytester.makepyfile(test_checks=CHECKS)
    pytester.runpytest("--submissions", "alice", "--submissions", "bob", "--report-dir", "r")
    results = json.loads((pytester.path / "r" / "results.json").read_text())
    assert sorted(results["submissions"]) == ["alice", "bob"]  # both graded: the batch went on
    for sid in ("alice", "bob"):
        checks = results["submissions"][sid]["checks"]
        harness_bug, engine_5xx = checks["train.dockerfile"], checks["train.build"]
        engine_4xx, engine_gone = checks["train.run"], checks["train.reported_accuracy"]
        assert harness_bug["status"] == "error"
        assert harness_bug["message"].startswith("infrastructure error")
        assert engine_5xx["status"] == "error" and "no space left" in engine_5xx["message"]
        assert engine_gone["status"] == "error" and "dockerd went away" in engine_gone["message"]
        # What the submission's content made the engine refuse is the student's failure.
        assert engine_4xx["status"] == "failed"
        assert "executable file not found" in engine_4xx["message"]
        assert all(check["points"] == 0 for check in (harness_bug, engine_5xx, engine_4xx))
        assert checks["train.model_artifact"]["status"] == "passed"

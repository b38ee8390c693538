"""The CI templates in ci/: their structure, and their shell steps run for real on a submission."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from tests.cli import ROOT

pytestmark = pytest.mark.integration

GITHUB = ROOT / "ci" / "github-actions.yml"
GITLAB = ROOT / "ci" / "gitlab-ci.yml"
EXAMPLE = ROOT / "submissions" / "broken-build"  # graded in seconds: 5/100


def _load(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def test_the_github_workflow_is_well_formed():
    workflow = _load(GITHUB)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) >= {"push", "pull_request"}
    job = workflow["jobs"]["grade"]
    assert set(job["runs-on"]) >= {"self-hosted", "gpu"}
    assert job["permissions"]["checks"] == "write"
    steps = job["steps"]
    assert all(("uses" in step) != ("run" in step) for step in steps)
    assert steps[0]["uses"].startswith("actions/checkout@")
    grade = next(step for step in steps if 'grader" grade .' in step.get("run", ""))
    assert "--fail-under" in grade["run"] and '--report-dir "$GRADER_REPORT"' in grade["run"]
    junit = next(step for step in steps if "junit" in step.get("uses", ""))
    assert junit["if"] == "always()" and junit["with"]["report_paths"] == "grader-report/junit.xml"
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "grader-report/"
    assert job["env"]["GRADER_REPORT"] == "grader-report"


def test_the_gitlab_job_is_well_formed():
    job = _load(GITLAB)["lab5-grade"]
    assert job["tags"] == ["gpu"]
    assert any('grader" grade .' in line and "--fail-under" in line for line in job["script"])
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "grader-report/junit.xml"
    assert job["artifacts"]["paths"] == ["grader-report/"]
    assert job["variables"]["GRADER_REPORT"] == "grader-report"


def _run(script: str, project: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=project, capture_output=True, text=True, timeout=1200,
        env={**os.environ, **environment},
    )  # fmt: skip


def _score(report: Path) -> str:
    suite = ElementTree.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    return next(p.get("value") for p in suite.iter("property") if p.get("name") == "score")


@pytest.fixture
def project(tmp_path):
    """A student's repository: the submission at its root."""
    project = tmp_path / "repository"
    shutil.copytree(EXAMPLE, project)
    return project


def test_the_gitlab_job_grades_the_repository(project, tmp_path):
    job = _load(GITLAB)["lab5-grade"]
    environment = {
        **job["variables"], "CI_PROJECT_DIR": str(project), "CI_JOB_ID": "7",
        "TMPDIR": str(tmp_path), "LAB5_GRADER": str(ROOT), "LAB5_FAIL_UNDER": "5",
    }  # fmt: skip
    done = _run("\n".join(job["script"]), project, environment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "grader doctor: this machine can grade" in done.stdout
    assert _score(project / "grader-report") == "5"
    assert (project / "grader-report" / "report.html").is_file()
    # Below the bar, the job fails: the grade step alone, with the harness already installed.
    again = _run(job["script"][0] + "\n" + job["script"][-1], project,
                 {**environment, "LAB5_FAIL_UNDER": "60"})  # fmt: skip
    assert again.returncode == 1
    assert "scored below --fail-under 60" in again.stderr


def test_the_github_workflow_grades_the_repository(project, tmp_path):
    job = _load(GITHUB)["jobs"]["grade"]
    environment = {
        "RUNNER_TEMP": str(tmp_path), "LAB5_GRADER": str(ROOT), "LAB5_FAIL_UNDER": "5",
        "LAB5_PROFILE": "offline", "LAB5_MNIST_DIR": "", "GRADER_REPORT": "grader-report",
    }  # fmt: skip
    script = "\n".join(step["run"] for step in job["steps"] if "run" in step)
    done = _run(script, project, environment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _score(project / "grader-report") == "5"

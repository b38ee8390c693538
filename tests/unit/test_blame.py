"""Ours vs theirs: the harness's and the engine's faults are infrastructure errors, never the
student's failure; what the submission's content provokes stays the student's failure."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import docker.errors
import requests

from grader.cli.main import _check_fail_under
from grader.domain.results import CheckResult, GradingReport
from grader.pytest_plugin.plugin import classify_exception
from grader.reports.files import summary_lines


def engine_answer(status: int, explanation: str) -> docker.errors.APIError:
    """The exception docker-py raises for an engine answer with `status`."""
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/containers/abc/start"
    return docker.errors.APIError("engine said no", response, explanation=explanation)


def test_an_engine_refusal_of_the_submissions_content_is_the_students_failure():
    refusal = engine_answer(400, 'exec: "python": executable file not found in $PATH: unknown')
    status, message, _ = classify_exception(refusal)
    assert status == "failed"
    assert "executable file not found" in message


def test_an_engine_failure_is_an_infrastructure_error():
    status, message, _ = classify_exception(engine_answer(500, "devmapper: device busy"))
    assert status == "error"
    assert message.startswith("infrastructure error")
    assert "device busy" in message


def test_an_unreachable_engine_is_an_infrastructure_error():
    lost = requests.exceptions.ConnectionError("Connection aborted: dockerd.sock")
    status, message, _ = classify_exception(lost)
    assert (status, message.split(":")[0]) == ("error", "infrastructure error")
    assert "ConnectionError" in message


def test_a_bug_of_the_harness_is_an_infrastructure_error_not_a_failure():
    for bug in (AssertionError("server needs a successful serving build"), KeyError("x"),
                AssertionError()):  # fmt: skip
        status, message, _ = classify_exception(bug)
        assert status == "error", bug
        assert message.startswith("infrastructure error"), message
        assert type(bug).__name__ in message


def report_with(tmp_path: Path, checks: dict[str, list[tuple[str, str, float, float]]]):
    report = GradingReport("r", "offline", "rubric.toml", "0")
    for sid, rows in checks.items():
        result = report.submission(sid, tmp_path / sid, tmp_path / "artifacts" / sid)
        for check_id, status, points, max_points in rows:
            message = "infrastructure error: the Docker engine failed" if status == "error" else ""
            result.checks[check_id] = CheckResult(
                check_id,
                check_id,
                status,
                points,
                max_points,
                message=message,  # type: ignore[arg-type]
            )
    return report


def test_the_terminal_table_lists_infrastructure_errors_apart_from_lost_points(tmp_path):
    report = report_with(
        tmp_path,
        {
            "alice": [("train.build", "passed", 10, 10), ("train.run", "error", 0, 10)],
            "bob": [("train.build", "failed", 0, 10), ("train.run", "skipped", 0, 10)],
        },
    )
    lines = summary_lines(report)
    alice = next(line for line in lines if line.startswith("alice"))
    assert "train.run" not in alice  # not a loss the student caused
    assert any("ERROR" in line and "train.run" in line for line in lines)
    assert "alice" in lines[-1] and "bob" not in lines[-1]
    assert "infrastructure error" in lines[-1]


def test_fail_under_leaves_out_submissions_with_infrastructure_errors(tmp_path, capsys):
    report = report_with(
        tmp_path,
        {
            "alice": [("train.build", "passed", 10, 10), ("train.run", "error", 0, 10)],
            "bob": [("train.build", "failed", 0, 10), ("train.run", "skipped", 0, 10)],
        },
    )
    (tmp_path / "results.json").write_text(json.dumps(report.to_json()))
    code = _check_fail_under(Namespace(report_dir=str(tmp_path), fail_under=50.0))
    err = capsys.readouterr().err
    assert code == 1
    assert "bob (0/20)" in err
    assert "alice (" not in err
    assert "leaves out alice" in err

    only_alice = report_with(tmp_path, {"alice": [("train.run", "error", 0, 10)]})
    (tmp_path / "results.json").write_text(json.dumps(only_alice.to_json()))
    assert _check_fail_under(Namespace(report_dir=str(tmp_path), fail_under=50.0)) == 0


def test_a_layer_the_engine_lost_under_a_build_is_tried_again_but_a_students_words_are_not():
    from grader.stages.build import engine_store_race

    lost = (
        "failed to get digest sha256:000cd43dd8cd78c5ec5c48aa7a7af38f5687fccad32a486bea3effbb69116"
        "2f8: open /var/lib/docker/image/overlay2/imagedb/content/sha256/000cd43dd8cd78c5ec5c48aa7"
        "a7af38f5687fccad32a486bea3effbb691162f8: no such file or directory"
    )
    assert engine_store_race(lost)
    assert engine_store_race("No such image: sha256:4c3b2a1f")
    # What a Dockerfile can make the builder say is the student's own failure.
    for own in (
        "The command '/bin/sh -c echo failed to get digest sha256:ab: open /var/lib/docker/x "
        "&& false' returned a non-zero code: 1",
        "COPY failed: file not found in build context or excluded by .dockerignore: stat "
        "requirements.txt: file does not exist",
        "pull access denied for nvidia/cuda, repository does not exist",
    ):
        assert not engine_store_race(own), own

"""Through the plugin: a failed check's reason code and facts reach results.json, with the check's
id added where the failure was raised without it; passed checks carry none."""

from __future__ import annotations

import json

import pytest

from grader.domain.checks import CHECKS as TABLE
from grader.domain.settings import Settings

pytestmark = pytest.mark.integration

GRADER_HOME = Settings.from_env().home

CHECKS = """
import docker.errors
import requests

from grader.domain.checks import CHECKS
from grader.domain.reasons import reason
from grader.pytest_plugin.plugin import check, fail_check


def refusal():
    response = requests.Response()
    response.status_code = 400
    return docker.errors.APIError("engine", response, explanation="invalid reference format")


def make(check_id):
    def test(grading):
        if check_id == "train.run":
            fail_check("any wording", "the log", reason("train.run/timeout", limit_s=900))
        if check_id == "serve.build":  # raised where the check is not known
            fail_check("any wording", reason=reason("base-image", image="x:1"))
        if check_id == "train.build":
            raise refusal()
        if check_id == "serve.ping":
            fail_check("no reason given")

    return check(check_id)(test)


for entry in CHECKS:  # each check's test where the table of checks names it
    if entry.module == MODULE:
        globals()[entry.function] = make(entry.id)
"""


def test_reasons_reach_the_results(pytester, monkeypatch):
    monkeypatch.setenv("GRADER_HOME", str(GRADER_HOME))  # pytester moves HOME
    pytester.mkdir("alice").joinpath("train").mkdir()
    for module in {check.module for check in TABLE}:
        pytester.makepyfile(**{module: f"MODULE = {module!r}\n{CHECKS}"})
    pytester.runpytest("--submissions", "alice", "--report-dir", "r")
    checks = json.loads((pytester.path / "r" / "results.json").read_text())["submissions"]["alice"][
        "checks"
    ]
    run, serve_build = checks["train.run"], checks["serve.build"]
    assert (run["status"], run["reason"], run["facts"]) == (
        "failed",
        "train.run/timeout",
        {"limit_s": 900},
    )
    assert (serve_build["reason"], serve_build["facts"]) == (
        "serve.build/base-image",
        {"image": "x:1"},
    )
    refused = checks["train.build"]
    assert (refused["status"], refused["reason"]) == ("failed", "train.build/engine-refused")
    assert refused["facts"] == {"error": "invalid reference format"}
    assert checks["serve.ping"]["status"] == "failed"
    for check_id in ("serve.ping", "train.dockerfile"):
        assert "reason" not in checks[check_id] and "facts" not in checks[check_id]

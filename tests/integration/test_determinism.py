"""Grading the same submissions twice gives the same verdicts and scores, check by check, with
the same hidden-digit seed; here the two runs even go at the same time on one host, as two
batches of a TA would, and the second one (which reaps dead runs as it starts) leaves the first
alone."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from grader.engine.containers import RUN_LABEL, SUBMISSION_LABEL
from grader.engine.daemon import connect
from tests.busy import rubric_with_fewer_hidden_digits
from tests.cli import ROOT, run_grader
from tests.integration.test_grade_examples import EXPECTED

pytestmark = pytest.mark.integration

# Cheap examples with different verdicts: a failed build, a server bound to loopback (found by
# looking inside while polling), and held-out accuracy below the target (the sample decides).
SUBSET = ["broken-build", "serve-localhost", "serve-bad-model"]
SEED = "20240117"


def _grade(paths: list[str], report_dir: object, options: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "grader", "grade", *paths, "--report-dir", str(report_dir),
         *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _containers_of(client, ids):
    return [
        container
        for sid in ids
        for container in client.containers.list(filters={"label": f"{SUBMISSION_LABEL}={sid}"})
    ]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Both runs' results, and what was seen while they overlapped."""
    folder = tmp_path_factory.mktemp("twice")
    options = ["--seed", SEED] if "--seed" in run_grader("grade", "--help").stdout else []
    options += ["--rubric", str(rubric_with_fewer_hidden_digits(folder))]
    runs = {}
    for which in ("first", "second"):
        # Ids of this run's own: its containers are told apart from the other run's and the host's.
        ids = {f"{name}-{secrets.token_hex(3)}": name for name in SUBSET}
        for sid, name in ids.items():
            shutil.copytree(ROOT / "submissions" / name, folder / which / "in" / sid)
        runs[which] = ids
    client = connect()
    first = _grade([str(folder / "first" / "in" / s) for s in runs["first"]],
                   folder / "first" / "report", options)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (first_containers := _containers_of(client, runs["first"])):
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the first run started no container"
            time.sleep(0.5)
        second = _grade([str(folder / "second" / "in" / s) for s in runs["second"]],
                        folder / "second" / "report", options)  # fmt: skip
        # Once the second run has a container, it has done its reaping.
        while not _containers_of(client, runs["second"]):
            assert second.poll() is None, second.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the second run started no container"
            time.sleep(0.5)
        overlap = {
            "first still grading": first.poll() is None,
            "first run": first_containers[0].labels[RUN_LABEL],
        }
        outputs = {"second": second.communicate(timeout=1200)[0]}
    finally:
        if first.returncode is None:  # still running, or failed above before it was read
            outputs_first = first.communicate(timeout=1200)[0]
    outputs["first"] = outputs_first
    results = {}
    for which, ids in runs.items():
        assert (first if which == "first" else second).returncode == 0, outputs[which][-3000:]
        report = json.loads((folder / which / "report" / "results.json").read_text())
        results[which] = {ids[sid]: result for sid, result in report["submissions"].items()}
        results[which]["run_id"] = report["run_id"]
    return results, overlap


def test_the_second_run_started_while_the_first_was_grading(two_runs):
    results, overlap = two_runs
    assert overlap["first still grading"]
    assert overlap["first run"] == results["first"]["run_id"]
    assert results["first"]["run_id"] != results["second"]["run_id"]


@pytest.mark.parametrize("which", ["first", "second"])
def test_each_run_gets_the_expected_verdicts(two_runs, which):
    results, _ = two_runs
    for name in SUBSET:
        score, lost = EXPECTED[name]
        result = results[which][name]
        assert result["score"] == score, (name, result["score"])
        for check_id, check in result["checks"].items():
            status, phrase = lost.get(check_id, ("passed", ""))
            assert check["status"] == status, (name, check_id, check["message"])
            assert phrase in check["message"], (name, check_id, check["message"])


def _without_ports(message: str) -> str:
    """A message without the host ports the server was published on: free ports differ."""
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", message)


@pytest.mark.parametrize("name", SUBSET)
def test_both_runs_agree_check_by_check(two_runs, name):
    results, _ = two_runs
    first, second = results["first"][name], results["second"][name]
    assert first["score"] == second["score"]
    assert first["checks"].keys() == second["checks"].keys()
    for check_id, check in first["checks"].items():
        other = second["checks"][check_id]
        verdict = (check["status"], check["points"], _without_ports(check["message"]))
        theirs = (other["status"], other["points"], _without_ports(other["message"]))
        assert verdict == theirs, check_id
    assert first.get("wrong_digits") == second.get("wrong_digits")

"""Runs that are interrupted keep what they graded; what a killed run leaves is reaped."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest

from grader.domain.settings import Settings
from grader.engine.containers import RUN_LABEL, SUBMISSION_LABEL
from grader.engine.daemon import connect
from tests.cli import ROOT, run_grader

pytestmark = pytest.mark.integration

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"


def own_locks(tmp_path):
    """A lock folder of the test's own: other runs on the host cannot see its runs' locks, so
    they leave the runs killed here to the test's next run (they would reap them: they are dead)."""
    return {"GRADER_RUN_LOCKS": str(tmp_path / "locks")}


def start_grading(tmp_path, name):
    """`grader grade` of a submission whose training sleeps; its id is this test's own."""
    name = f"{name}-{secrets.token_hex(3)}"
    submission = tmp_path / "submissions" / name
    (submission / "train").mkdir(parents=True)
    (submission / "train" / "Dockerfile").write_text(f"FROM {CUDA_BASE}\nCMD sleep 600\n")
    report_dir = tmp_path / "reports"
    process = subprocess.Popen(
        [sys.executable, "-m", "grader", "grade", str(submission), "--report-dir", str(report_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, **own_locks(tmp_path)},
    )  # fmt: skip
    client = connect()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        running = client.containers.list(filters={"label": f"{SUBMISSION_LABEL}={name}"})
        if running:
            return process, running[0], report_dir, name
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.5)
    process.kill()
    raise AssertionError("the training container never started")


def leftovers(run_id):
    client = connect()
    selector = {"label": f"{RUN_LABEL}={run_id}"}
    return client.containers.list(all=True, filters=selector) + client.images.list(filters=selector)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_keeps_its_results_and_cleans_up(tmp_path, signum):
    process, container, report_dir, sid = start_grading(tmp_path, f"stopped-{signum}")
    run_id = container.labels[RUN_LABEL]
    os.killpg(process.pid, signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    results = json.loads((report_dir / "results.json").read_text())
    checks = results["submissions"][sid]["checks"]
    assert checks["train.build"]["status"] == "passed"
    assert leftovers(run_id) == []
    assert not (Settings.from_env().home / "runs" / run_id).exists()


def test_a_killed_run_is_reaped_by_the_next_one(tmp_path):
    process, container, report_dir, sid = start_grading(tmp_path, "killed")
    run_id = container.labels[RUN_LABEL]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    results = json.loads((report_dir / "results.json").read_text())
    assert results["submissions"][sid]["checks"]["train.build"]["status"] == "passed"
    assert leftovers(run_id)  # the kill left the training container and the image

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "submission.toml").write_text("")
    done = run_grader(
        "grade", str(empty), "--report-dir", str(tmp_path / "next"), env=own_locks(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"removed what \d+ interrupted run\(s\) left behind", done.stdout)
    assert leftovers(run_id) == []
    assert not (Settings.from_env().home / "runs" / run_id).exists()


def test_a_run_that_cannot_lock_says_why_and_grades_nothing(tmp_path):
    (tmp_path / "a-file").write_text("")
    locks = tmp_path / "a-file" / "locks"
    done = run_grader(
        "grade", str(ROOT / "submissions" / "broken-build"), "--report-dir", str(tmp_path / "r"),
        env={"GRADER_RUN_LOCKS": str(locks)},
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"ERROR: cannot start a grading run: no folder for run locks can be written: {locks}; "
        "set GRADER_RUN_LOCKS to a folder every grading run on this host can write"
    )

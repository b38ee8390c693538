"""Grading on a Ray cluster: each submission's whole pipeline runs as one task on a node that
offers the `docker` resource, and the results come back to the driver, which writes the same
reports as a local run.

A task ships the submission's files to its node, grades them there with `grader grade -j 1`
(the node's own engine, dataset and base images, prepared on first use), and returns the
result with its artifacts. A task lost with its node is run again elsewhere, once; a submission
whose grading fails twice for reasons of the infrastructure is reported as such, not as the
student's failure.
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import __version__
from grader.domain.dataset import Dataset
from grader.domain.errors import GraderError
from grader.domain.results import (
    CheckResult,
    GradingReport,
    SubmissionResult,
    submission_from_json,
)
from grader.domain.rubric import Profile, Rubric
from grader.domain.submission import slugify
from grader.reports.files import summary_lines, write_reports
from grader.reports.store import load as load_stored
from grader.reports.store import rescore, submission_key
from grader.reports.store import store as store_result

Say = Callable[[str], None]
ATTEMPTS = 2  # a task lost with its node (or failing in the harness) is run once more
PR_SET_PDEATHSIG = 1


class InfrastructureError(GraderError):
    """Grading a submission failed for reasons of the node, not of the submission."""


@dataclass(frozen=True)
class Job:
    """A submission to grade: its id and its folder on the driver."""

    id: str
    root: Path


@dataclass(frozen=True)
class TaskOptions:
    """What a node needs to grade as the driver would."""

    profile: str
    rubric_text: str | None  # the driver's rubric file, when not the bundled one
    gpus: str
    image_sources_json: str | None
    cpus: float
    memory_mb: int
    wants_gpu: bool
    seed: int | None = None  # the run's hidden-digit seed, the same on every node


def pack(folder: Path) -> bytes:
    """A submission folder as a gzipped tar under its own name (which is its id when its
    submission.toml names none), to ship to a node."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()


def _die_with_parent() -> None:
    """In the grading subprocess: end (SIGTERM, so containers are removed) if the Ray worker
    that started it dies, as it does when its node is lost."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def grade_on_node(packed: bytes, options: TaskOptions) -> dict[str, Any]:
    """The body of a Ray task: grade one submission on this node; its result and artifacts."""
    with tempfile.TemporaryDirectory(prefix="lab5-ray-") as work:
        folder = Path(work)
        with tarfile.open(fileobj=io.BytesIO(packed)) as archive:
            archive.extractall(folder / "in", filter="data")
        (submission,) = (folder / "in").iterdir()
        report_dir = folder / "report"
        command = [
            sys.executable, "-m", "grader", "grade", str(submission),
            "-j", "1", "--progress", "lines", "--force", "--report-dir", str(report_dir),
            "--profile", options.profile, "--gpus", options.gpus,
        ]  # fmt: skip
        if options.seed is not None:
            command += ["--seed", str(options.seed)]
        if options.rubric_text is not None:
            (folder / "rubric.toml").write_text(options.rubric_text)
            command += ["--rubric", str(folder / "rubric.toml")]
        if options.image_sources_json:
            sources = json.loads(options.image_sources_json)
            command += ["--image-sources", ",".join(sources["order"])]
            for mirror in sources["mirrors"]:
                command += ["--mirror", mirror]
        setup = subprocess.run(
            [sys.executable, "-m", "grader", "setup", "--profile", options.profile],
            capture_output=True, text=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        if setup.returncode != 0:
            raise InfrastructureError(f"setting up node failed: {setup.stderr.strip()[-500:]}")
        done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_die_with_parent)
        results_file = report_dir / "results.json"
        if done.returncode != 0 or not results_file.is_file():
            raise InfrastructureError(
                f"grading exited with code {done.returncode}: {done.stderr.strip()[-500:]}"
            )
        results = json.loads(results_file.read_text())["submissions"]
        (result,) = results.values()
        artifacts = io.BytesIO()
        with tarfile.open(fileobj=artifacts, mode="w:gz") as archive:
            for path in (report_dir / "artifacts").iterdir():
                archive.add(path, arcname=".")
        return {"result": result, "artifacts": artifacts.getvalue(), "node": _node_id()}


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


@dataclass
class RayBatch:
    """The driver's side: submit, collect, store and report."""

    address: str
    submissions: list[Job]
    rubric: Rubric
    profile: Profile
    dataset: Dataset
    report_dir: Path
    options: TaskOptions
    force: bool
    say: Say

    def run(self) -> GradingReport:
        import ray

        ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False,
                 _node_ip_address=_address_host(self.address))  # fmt: skip
        try:
            return self._grade(ray)
        finally:
            ray.shutdown()

    def _grade(self, ray: Any) -> GradingReport:
        report = GradingReport(
            run_id=f"ray-{time.strftime('%Y%m%d-%H%M%S')}",
            profile=self.profile.name,
            rubric=str(self.rubric.path),
            harness_version=__version__,
            seed=self.options.seed,
        )
        keys = {s.id: submission_key(s.root, self.rubric, self.profile, self.dataset)
                for s in self.submissions}  # fmt: skip
        to_grade = []
        for submission in self.submissions:
            stored = (
                None
                if self.force
                else load_stored(self.report_dir, submission.id, keys[submission.id])
            )
            if stored is not None:
                report.submissions[submission.id] = rescore(stored, self.rubric, self.profile)
            else:
                to_grade.append(submission)
        if len(to_grade) < len(self.submissions):
            self.say(f"{len(self.submissions) - len(to_grade)} unchanged submission(s) taken "
                     "from stored results (--force grades them again)")  # fmt: skip
        resources: dict[str, Any] = {
            "num_cpus": self.options.cpus,
            "memory": self.options.memory_mb * (1 << 20),
            "resources": {"docker": 1},
            "max_retries": ATTEMPTS - 1,  # node lost: run again elsewhere
            "retry_exceptions": [InfrastructureError],
        }
        if self.options.wants_gpu:
            resources["num_gpus"] = 1
        task = ray.remote(**resources)(grade_on_node)
        pending = {
            task.remote(pack(submission.root), self.options): submission for submission in to_grade
        }
        self.say(f"{len(pending)} submission(s) sent to the Ray cluster at {self.address}")
        started, done = time.monotonic(), 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            submission = pending.pop(ready[0])
            try:
                answer = ray.get(ready[0])
            except Exception as error:  # the task's failure after its retries
                result = self._infrastructure_failure(submission, error)
                where = "nowhere"
            else:
                result = self._take(submission, answer)
                where = f"node {answer['node'][:12]}"
                store_result(self.report_dir, result, keys[submission.id])
            report.submissions[submission.id] = result
            write_reports(report, self.report_dir)
            done += 1
            self.say(
                f"[{done}/{len(to_grade)}] {submission.id}: {result.score:g}/"
                f"{result.max_score:g} on {where} ({time.monotonic() - started:.0f} s elapsed)"
            )
        write_reports(report, self.report_dir)
        for line in summary_lines(report):
            self.say(line)
        return report

    def _take(self, submission: Job, answer: dict[str, Any]) -> SubmissionResult:
        result = submission_from_json(answer["result"])
        artifacts = self.report_dir / "artifacts" / slugify(submission.id)
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(answer["artifacts"])) as archive:
            archive.extractall(artifacts, filter="data")
        result.submission_id = submission.id
        result.path, result.artifacts = str(submission.root), str(artifacts)
        return result

    def _infrastructure_failure(self, submission: Job, error: Exception) -> SubmissionResult:
        reason = str(error).strip().splitlines()[-1][:300] if str(error).strip() else repr(error)
        result = SubmissionResult(
            submission.id, str(submission.root),
            str(self.report_dir / "artifacts" / slugify(submission.id)),
        )  # fmt: skip
        for check_id, spec in self.rubric.checks.items():
            result.checks[check_id] = CheckResult(
                check_id, spec.title, "error", 0.0, spec.points,
                f"infrastructure error, not the submission's: grading failed {ATTEMPTS} times "
                f"on the cluster ({reason})",
            )  # fmt: skip
        result.note("graded again by the next run: infrastructure errors are not stored")
        return result


def _address_host(address: str) -> str | None:
    host = address.rsplit(":", 1)[0]
    return host if host and host != "auto" else None

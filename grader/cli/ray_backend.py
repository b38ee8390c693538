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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import __version__
from grader.domain.dataset import Dataset
from grader.domain.errors import GraderError
from grader.domain.handins import Intake, refused_result, start_result, take_in_all
from grader.domain.results import (
    CheckResult,
    GradingReport,
    SubmissionResult,
    submission_from_json,
)
from grader.domain.rubric import Profile, Rubric
from grader.domain.verdicts import review
from grader.reports.files import summary_lines, write_reports
from grader.reports.reuse import partition
from grader.reports.store import store as store_result

Say = Callable[[str], None]
ATTEMPTS = 2  # a task lost with its node (or failing in the harness) is run once more
PR_SET_PDEATHSIG = 1


class InfrastructureError(GraderError):
    """Grading a submission failed for reasons of the node, not of the submission."""


@dataclass(frozen=True)
class TaskOptions:
    """What a node needs to grade as the driver would."""

    profile: str
    rubric_text: str | None  # the driver's rubric file, when not the bundled one
    gpus: str
    image_sources_json: str | None  # as the driver resolved them: config, then options over it
    cpus: float
    memory_mb: int
    wants_gpu: bool
    seed: int | None = None  # the run's hidden-digit seed, the same on every node


def pack(folder: Path) -> bytes:
    """A submission folder (the driver's private copy) as a gzipped tar under its own name
    (which is its id when its submission.toml names none), to ship to a node."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()


def node_commands(
    submission: Path, report_dir: Path, rubric_file: Path | None, options: TaskOptions
) -> tuple[list[str], list[str]]:
    """The node's set-up command and its grading command: the driver's profile, rubric, GPUs,
    seed and base-image sources, exactly as resolved on the driver."""
    setup = [sys.executable, "-m", "grader", "setup", "--profile", options.profile]
    command = [
        sys.executable, "-m", "grader", "grade", str(submission),
        "-j", "1", "--progress", "lines", "--force", "--report-dir", str(report_dir),
        "--profile", options.profile, "--gpus", options.gpus,
    ]  # fmt: skip
    if options.seed is not None:
        command += ["--seed", str(options.seed)]
    if rubric_file is not None:
        command += ["--rubric", str(rubric_file)]
    if options.image_sources_json:
        command += ["--image-sources-json", options.image_sources_json]
        if "standins" not in json.loads(options.image_sources_json)["order"]:
            setup.append("--no-standins")  # never built where they may not be used
    return setup, command


def unpack(packed: bytes, into: Path) -> Path:
    """On a node: the submission folder `pack` made, unpacked under `into`."""
    with tarfile.open(fileobj=io.BytesIO(packed)) as archive:
        # The driver packed its private copy, whose links lead inside or nowhere (to an absolute
        # path under /dev/null, which the "data" filter refuses); "tar" still keeps every file
        # inside the folder.
        archive.extractall(into, filter="tar")
    (submission,) = into.iterdir()
    return submission


def _die_with_parent() -> None:
    """In the grading subprocess: end (SIGTERM, so containers are removed) if the Ray worker
    that started it dies, as it does when its node is lost."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def grade_on_node(packed: bytes, options: TaskOptions) -> dict[str, Any]:
    """The body of a Ray task: grade one submission on this node; its result and artifacts."""
    with tempfile.TemporaryDirectory(prefix="lab5-ray-") as work:
        folder = Path(work)
        submission = unpack(packed, folder / "in")
        report_dir = folder / "report"
        rubric_file = None
        if options.rubric_text is not None:
            rubric_file = folder / "rubric.toml"
            rubric_file.write_text(options.rubric_text)
        setup_command, command = node_commands(submission, report_dir, rubric_file, options)
        setup = subprocess.run(
            setup_command, capture_output=True, text=True, preexec_fn=_die_with_parent
        )
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
    """The driver's side: split the batch, submit, collect, store and report."""

    address: str
    intakes: list[Intake]  # the batch as taken in on the driver (grader.domain.handins)
    rubric: Rubric
    profile: Profile
    dataset: Dataset
    report_dir: Path
    options: TaskOptions
    force: bool
    say: Say
    hidden: str | None = None  # what the hidden digits depend on, for the stored results' key
    cleared: dict[str, set[str]] = field(default_factory=dict)  # id -> flags a TA cleared

    def run(self) -> GradingReport:
        import ray

        ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False,
                 _node_ip_address=_address_host(self.address))  # fmt: skip
        try:
            return self._grade()
        finally:
            ray.shutdown()

    def _grade(self) -> GradingReport:
        import ray  # an optional dependency, set up by `run`

        report = GradingReport(
            run_id=f"ray-{time.strftime('%Y%m%d-%H%M%S')}",
            profile=self.profile.name,
            rubric=str(self.rubric.path),
            harness_version=__version__,
            seed=self.options.seed,
        )
        for intake in self.intakes:  # every submission in the report, in the batch's order
            start_result(report, intake, self.report_dir)
        split = partition(self.intakes, self.report_dir, self.rubric, self.profile, self.dataset,
                          hidden=self.hidden, force=self.force, cleared=self.cleared)  # fmt: skip
        report.submissions.update(split.stored)
        for intake in split.refused:
            refused_result(report, intake, self.report_dir, self.rubric, self.profile,
                           self.cleared.get(intake.id, set()))  # fmt: skip
        for line in split.lines():
            self.say(line)
        write_reports(report, self.report_dir)
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
            task.remote(pack(intake.path), self.options): intake for intake in split.to_grade
        }
        self.say(f"{len(pending)} submission(s) sent to the Ray cluster at {self.address}")
        started, done = time.monotonic(), 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            intake = pending.pop(ready[0])
            try:
                answer = ray.get(ready[0])
            except Exception as error:  # the task's failure after its retries
                result = self._infrastructure_failure(report, intake, error)
                where = "nowhere"
            else:
                result = self._take(report, intake, answer)
                where = f"node {answer['node'][:12]}"
                store_result(self.report_dir, result, split.keys[intake.id])
            write_reports(report, self.report_dir)
            done += 1
            self.say(
                f"[{done}/{len(split.to_grade)}] {intake.id}: {result.score:g}/"
                f"{result.max_score:g} on {where} ({time.monotonic() - started:.0f} s elapsed)"
            )
        write_reports(report, self.report_dir)
        for line in summary_lines(report):
            self.say(line)
        return report

    def _take(
        self, report: GradingReport, intake: Intake, answer: dict[str, Any]
    ) -> SubmissionResult:
        """The node's result, in the record intake started for the submission (its id, notes
        and flags on the driver), reviewed under the flags a TA cleared."""
        graded = submission_from_json(answer["result"])
        result = start_result(report, intake, self.report_dir)
        artifacts = Path(result.artifacts)
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(answer["artifacts"])) as archive:
            archive.extractall(artifacts, filter="data")
        result.checks = graded.checks
        result.measurements = graded.measurements
        result.training_curve = graded.training_curve
        result.wrong_digits = graded.wrong_digits
        for note in graded.notes:
            result.note(note)
        known = {flag.id for flag in result.integrity_flags}
        result.integrity_flags += [f for f in graded.integrity_flags if f.id not in known]
        cleared = self.cleared.get(intake.id, set())
        review(result, self.profile.targets, self.rubric.integrity_penalty, cleared)
        return result

    def _infrastructure_failure(
        self, report: GradingReport, intake: Intake, error: Exception
    ) -> SubmissionResult:
        reason = str(error).strip().splitlines()[-1][:300] if str(error).strip() else repr(error)
        result = start_result(report, intake, self.report_dir)
        for check_id, spec in self.rubric.checks.items():
            result.checks[check_id] = CheckResult(
                check_id, spec.title, "error", 0.0, spec.points,
                f"infrastructure error, not the submission's: grading failed {ATTEMPTS} times "
                f"on the cluster ({reason})",
            )  # fmt: skip
        result.note("graded again by the next run: infrastructure errors are not stored")
        return result


def grade_batch(
    address: str,
    paths: list[Path],
    rubric: Rubric,
    profile: Profile,
    dataset: Dataset,
    report_dir: Path,
    options: TaskOptions,
    *,
    force: bool,
    hidden: str | None,
    cleared: dict[str, set[str]],
    say: Say,
) -> GradingReport:
    """Take the hand-ins in on the driver as a local run does (private copies, archives
    unpacked under the report folder, unique ids), then grade them on the cluster."""
    with tempfile.TemporaryDirectory(prefix="lab5-ray-intake-") as staging:
        intakes = take_in_all(paths, report_dir / "intake", Path(staging))
        batch = RayBatch(address, intakes, rubric, profile, dataset, report_dir, options, force,
                         say, hidden=hidden, cleared=cleared)  # fmt: skip
        return batch.run()


def _address_host(address: str) -> str | None:
    host = address.rsplit(":", 1)[0]
    return host if host and host != "auto" else None

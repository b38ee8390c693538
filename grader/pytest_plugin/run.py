"""One grading run, as one process sees it: the engine and the `Grader`, GPUs, base images, the
run's lock, the hidden digits, deadlines, and clean-up when a submission or the run is done.

With pytest-xdist, the controlling process owns the run (its id, lock, reaping, GPU choice and
reports) and hands workers what they share (`WorkerShare`); workers grade whole submissions.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from grader import __version__
from grader.domain.dataset import HiddenSample, hidden_sample, load_dataset, read_hidden_dir
from grader.domain.errors import BaseImageUnavailable, GraderError
from grader.domain.handins import Intake
from grader.domain.results import GradingReport, SubmissionResult
from grader.domain.rubric import Profile, Rubric
from grader.domain.settings import Settings
from grader.engine.baseimages import ImageSources
from grader.engine.containers import RUN_LABEL, SUBMISSION_LABEL
from grader.engine.daemon import connect
from grader.engine.gpus import chosen_gpus, detect_gpus, gpus_for_worker
from grader.engine.images import needed_images
from grader.engine.runs import RunLock, reap_dead_runs
from grader.engine.standins import BASE_IMAGE
from grader.engine.watchdog import check_budget
from grader.pytest_plugin.deadlines import deadline, kill_containers
from grader.pytest_plugin.run_results import RunResults
from grader.reports.reuse import hidden_key
from grader.reports.store import load_cleared
from grader.stages.grading import Grader, new_run_id, share_host, threads_per_container
from grader.stages.labsteps import ALPINE

Say = Callable[[str], None]

RUN_ID_KEY = "lab5_grader_run_id"
WORKERS_KEY = "lab5_grader_workers"
GPUS_KEY = "lab5_grader_gpus"
UNAVAILABLE_KEY = "lab5_grader_unavailable_images"
SEED_KEY = "lab5_grader_seed"


@dataclass(frozen=True)
class RunOptions:
    """The run's choices from the command line."""

    report_dir: Path  # resolved
    gpus: str  # auto, none, all or GPU ids, already checked
    seed: int | None  # None: a new secret one
    hidden_dir: Path | None  # resolved; None: the dataset's own hidden digits
    force: bool
    keep_images: bool
    image_cache_gb: float
    image_sources_json: str | None  # as `grader grade` resolved them


@dataclass(frozen=True)
class WorkerShare:
    """What the controlling process hands every worker, so that the workers grade one run."""

    run_id: str
    workers: int
    gpu_ids: tuple[str, ...]
    unavailable: dict[str, list[str]]  # base image -> every source tried
    seed: int
    index: int = 0  # this worker's number (gw<index>)

    def to_workerinput(self) -> dict[str, Any]:
        return {
            RUN_ID_KEY: self.run_id,
            WORKERS_KEY: self.workers,
            GPUS_KEY: ",".join(self.gpu_ids),
            UNAVAILABLE_KEY: json.dumps(self.unavailable),
            SEED_KEY: self.seed,
        }

    @classmethod
    def from_workerinput(cls, workerinput: Mapping[str, Any]) -> WorkerShare:
        return cls(
            run_id=workerinput[RUN_ID_KEY],
            workers=int(workerinput[WORKERS_KEY]),
            gpu_ids=tuple(g for g in workerinput[GPUS_KEY].split(",") if g),
            unavailable=json.loads(workerinput[UNAVAILABLE_KEY]),
            seed=int(workerinput[SEED_KEY]),
            index=int(str(workerinput.get("workerid", "gw0")).removeprefix("gw") or 0),
        )


def claim_run(settings: Settings, share: WorkerShare | None) -> tuple[str, RunLock | None]:
    """The run's id and, in the controlling process, its lock: taken before intake copies
    submissions into the run's folder, so that no reaper ever takes that folder for a dead
    run's. Workers grade under the controller's id."""
    if share is not None:
        return share.run_id, None
    run_id = new_run_id()
    try:
        return run_id, RunLock(settings, run_id)
    except OSError as error:
        raise GraderError(f"cannot start a grading run: {error}") from None


class GradingRun:
    """State of one grading run in this process; the plugin's hooks delegate to it."""

    def __init__(
        self,
        *,
        settings: Settings,
        rubric: Rubric,
        profile: Profile,
        intakes: list[Intake],
        options: RunOptions,
        run: tuple[str, RunLock | None],
        workers: int,
        share: WorkerShare | None,
        say: Say,
    ) -> None:
        self.settings = settings
        self.rubric = rubric
        self.profile = profile
        self.intakes = {intake.id: intake for intake in intakes}
        self.options = options
        self.run_id, self._lock = run
        self.workers = share.workers if share else workers
        self.share = share  # None in the controlling process
        self.controls = share is None
        self.say = say
        self.gpu_ids: tuple[str, ...] = ()  # chosen by the controller, shared with workers
        self.started: dict[str, float] = {}  # submission id -> when its first check began
        self.stopped: dict[str, str] = {}  # submission id -> the check whose deadline stopped it
        self.unavailable: dict[str, list[str]] = {}  # base image -> every source tried
        # The controller draws the seed once; every worker sends the same hidden digits.
        given = options.seed
        self.seed = share.seed if share else given if given is not None else _new_seed()
        self._grader: Grader | None = None
        self._hidden: HiddenSample | None = None
        self.results: RunResults | None = None  # once the session has started

    @property
    def grader(self) -> Grader:
        assert self._grader is not None, "the grading session has not started"
        return self._grader

    def result_for(self, intake: Intake) -> SubmissionResult:
        assert self.results is not None, "the grading session has not started"
        return self.results.result_for(intake)

    def start(self) -> None:
        """Connect to the engine, reap what dead runs left, choose GPUs, get base images, and
        take unchanged submissions' stored results."""
        options = self.options
        try:
            client = connect()
            dataset = load_dataset(self.settings.datasets_dir / self.profile.dataset)
        except GraderError as error:
            raise pytest.UsageError(
                f"{error}\n(`grader setup --profile {self.profile.name}` prepares this host)"
            ) from None
        try:
            cleared = load_cleared(options.report_dir)
        except GraderError as error:
            raise pytest.UsageError(str(error)) from None
        if self.controls:
            reaped = reap_dead_runs(client, self.settings)
            if reaped:
                self.say(f"removed what {len(reaped)} interrupted run(s) left behind")
        engine_info = client.info()
        given = options.image_sources_json
        self._grader = Grader(
            client=client,
            settings=self.settings,
            profile=share_host(self.profile, engine_info, self.workers),
            threads=threads_per_container(self.profile, engine_info, self.workers),
            dataset=dataset,
            artifacts_root=options.report_dir / "artifacts",
            gpus=self._gpus(client),
            say=self.say,
            keep_images=options.keep_images,
            image_cache_bytes=int(float(options.image_cache_gb) * 1e9),
            image_sources=ImageSources.from_json(json.loads(given)) if given else None,
            run_id=self.run_id,
        )
        if self.share is not None:
            for image, tried in self.share.unavailable.items():
                self.grader.base_images.remember_unavailable(image, tried)
        else:
            self._prepare_base_images()
        report = GradingReport(
            run_id=self.run_id,
            profile=self.profile.name,
            rubric=str(self.rubric.path),
            harness_version=__version__,
            seed=self.seed,
        )
        self.results = RunResults(
            report, self.rubric, self.profile, options.report_dir, cleared, self.controls
        )
        for intake in self.intakes.values():
            self.results.result_for(intake)
        split = self.results.take_stored(
            self.intakes.values(),
            dataset,
            hidden_key(options.seed, options.hidden_dir),
            options.force,
        )
        for line in split.lines():
            self.say(line)

    def _prepare_base_images(self) -> None:
        """Before anything is built: every base image the batch needs, from its sources; a
        missing one is told once, with the submissions that need it (workers are told too)."""
        needed = needed_images(i.submission for i in self.intakes.values() if i.submission)
        if self._lock is not None:  # `grader images prune` leaves these while the run lives
            self._lock.record_images([*needed, ALPINE, BASE_IMAGE])
        for image, users in needed.items():
            try:
                self.grader.base_images.ensure(image)
            except BaseImageUnavailable as error:
                self.unavailable[image] = error.tried
                self.say(
                    f"base image {image} is not available for {len(users)} submission"
                    f"{'s' * (len(users) > 1)} ({', '.join(users)}): {'; '.join(error.tried)}"
                )

    def _gpus(self, client: docker.DockerClient) -> str:
        """This process's GPUs. The controller detects them once and hands them to workers."""
        if self.share is not None:
            return gpus_for_worker(self.share.gpu_ids, self.share.index, self.workers)
        if self.options.gpus != "none":
            labels = {RUN_LABEL: self.run_id, SUBMISSION_LABEL: "gpu-probe"}
            detection = detect_gpus(client, BASE_IMAGE, labels)
            self.gpu_ids = chosen_gpus(self.options.gpus, detection)
            use = ", ".join(self.gpu_ids) or "none: containers run on the CPU"
            self.say(f"GPUs: {detection.detail}; using {use}")
        return gpus_for_worker(self.gpu_ids, 0, 1)  # grading here means grading alone

    def share_with_workers(self) -> WorkerShare:
        return WorkerShare(self.run_id, self.workers, self.gpu_ids, self.unavailable, self.seed)

    def hidden_sample(self) -> HiddenSample:
        """This run's hidden digits: drawn by the seed from the pool, each one augmented."""
        if self._hidden is None:
            given = self.options.hidden_dir
            pool = read_hidden_dir(given) if given else self.grader.dataset.hidden_digits()
            self._hidden = hidden_sample(pool, self.seed, self.profile.limits.heldout_digits)
        return self._hidden

    def deadline_for(
        self, intake_id: str, check_id: str
    ) -> contextlib.AbstractContextManager[None] | None:
        """The check's deadline; None when it has no time at all (it then fails at once, saying
        so) or grading has not started."""
        if self._grader is None:
            return None
        limits = self.profile.limits
        started = self.started.setdefault(intake_id, time.monotonic())
        budget = check_budget(
            limits.check_seconds, limits.submission_seconds, time.monotonic() - started
        )
        if budget.seconds <= 0:
            return None
        intake = self.intakes[intake_id]
        stop = lambda: self._stop_containers(intake, check_id)  # noqa: E731
        return deadline(budget, self.result_for(intake), check_id, stop)

    def _stop_containers(self, intake: Intake, check_id: str) -> str | None:
        """Kill the submission's running containers; None, or why the engine could not."""
        self.stopped[intake.id] = check_id
        if intake.submission is None:
            return None
        return kill_containers(self.grader.client, self.run_id, intake.submission.id)

    def finish(self, intake_id: str) -> None:
        """After a submission's last check: stop its server and remove its images."""
        submission = self.intakes[intake_id].submission
        if submission is not None and self._grader is not None:
            try:
                self._grader.finish(submission)
            except Exception as error:  # cleaning up must never cost the next submission
                self.say(f"cleaning up after {intake_id} failed: {error}")

    def close(self) -> None:
        """At the end of the session: remove what this process made, release the lock, write
        the reports."""
        if self._grader is not None:
            with contextlib.suppress(Exception):
                # A worker cleans up after its own submissions; the controller, after the run.
                self._grader.close(whole_run=self.controls)
        if self._lock is not None:
            self._lock.release()
        if self.results is not None:
            self.results.write(everything=True)


def _new_seed() -> int:
    return secrets.randbelow(1 << 32)

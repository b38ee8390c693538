"""The pytest plugin that grades submissions: options, session state, fixtures and report hooks.

Registered through the `pytest11` entry point, so
`pytest --submissions DIR --pyargs grader.pytest_plugin.checks` works in any folder;
`grader grade` runs exactly that. Without `--submissions` the plugin only adds its options and
the `check` marker, and stays out of the way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NoReturn

import docker
import docker.errors
import pytest
import requests

from grader import __version__
from grader.domain.accuracy import training_curve
from grader.domain.dataset import (
    Dataset,
    HiddenSample,
    hidden_sample,
    load_dataset,
    read_hidden_dir,
)
from grader.domain.dockerfile import cuda_base_problem, read_dockerfile
from grader.domain.errors import BaseImageUnavailable, DockerfileError, GraderError, ManifestError
from grader.domain.inert import terminal_safe
from grader.domain.intake import ArchiveRefused, IntakeRefused, archive_stem, is_archive, take_in
from grader.domain.results import (
    CheckResult,
    Flag,
    GradingReport,
    Status,
    SubmissionResult,
    WrongDigit,
    submission_from_json,
    submission_to_json,
)
from grader.domain.rubric import DEFAULT_RUBRIC, Profile, Rubric, load_rubric
from grader.domain.settings import Settings
from grader.domain.submission import Submission, discover, load_submission, slugify
from grader.domain.verdicts import gpu_use_verdict, review
from grader.engine.baseimages import ImageSources
from grader.engine.containers import RUN_LABEL, SUBMISSION_LABEL, log_excerpt
from grader.engine.daemon import connect
from grader.engine.gpus import (
    check_selection,
    chosen_gpus,
    describe_device,
    detect_gpus,
    gpus_for_worker,
)
from grader.engine.images import needed_images
from grader.engine.runs import RunLock, reap_dead_runs
from grader.engine.standins import BASE_IMAGE
from grader.engine.watchdog import Budget, Watchdog, check_budget
from grader.pytest_plugin.parallel import SubmissionScheduling
from grader.pytest_plugin.progress import BOARD_KEY, Progress
from grader.pytest_plugin.registered import validate_collection
from grader.reports.files import summary_lines, write_reports, write_results
from grader.reports.store import load as load_stored
from grader.reports.store import load_cleared, rescore, submission_key
from grader.reports.store import store as store_result
from grader.stages.grading import (
    Grader,
    ImageBuild,
    TrainingRun,
    new_run_id,
    share_host,
    threads_per_container,
)
from grader.stages.labsteps import ALPINE
from grader.stages.serving import Server

CHECK_MARKER = "check"


class CheckFailure(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """A check that failed for a reason the student can act on; carries a log excerpt."""

    def __init__(self, message: str, log: str = "") -> None:
        # pytest prints its message on the terminal: shown inert, kept whole for the reports.
        super().__init__(terminal_safe(message, keep_newlines=True), pytrace=False)
        self.message = message
        self.log = log


def fail_check(message: str, log: str = "") -> NoReturn:
    __tracebackhide__ = True
    raise CheckFailure(message, log)


def check(check_id: str) -> pytest.MarkDecorator:
    """Mark a test as the rubric check `check_id`."""
    return getattr(pytest.mark, CHECK_MARKER)(check_id)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lab5-grader", "lab5-grader (grading lab 5 submissions)")
    group.addoption(
        "--submissions",
        action="append",
        default=[],
        metavar="PATH",
        help="a submission folder, or a folder of submissions (repeatable); turns grading on",
    )
    group.addoption("--profile", default="offline", help="rubric profile (default: offline)")
    group.addoption("--rubric", default=None, metavar="FILE", help="rubric TOML file")
    group.addoption(
        "--report-dir", default="reports", metavar="DIR", help="where reports go (default: reports)"
    )
    group.addoption(
        "--force",
        action="store_true",
        help="grade every submission again, even when a stored result is still valid",
    )
    group.addoption(
        "--keep-images",
        action="store_true",
        help="keep each submission's images after grading (default: remove them)",
    )
    group.addoption(
        "--image-sources-json",
        default=None,
        help="where base images come from, as `grader grade` resolved it (config and options)",
    )
    group.addoption(
        "--image-cache-gb",
        type=float,
        default=20.0,
        help="with --keep-images: images kept by earlier runs are removed, oldest first, while "
        "all kept images take more than this (default 20)",
    )
    group.addoption(
        "--gpus",
        default="auto",
        help="GPUs for containers: auto (when the engine has the NVIDIA runtime), none, all, ids",
    )
    group.addoption(
        "--seed",
        type=int,
        default=None,
        help="the secret that draws the run's hidden digits and their augmentation; the same "
        "seed sends the same digits again (default: a new random one, kept in results.json)",
    )
    group.addoption(
        "--hidden-dir",
        default=None,
        metavar="DIR",
        help="the course's own hidden digits instead of the dataset's: one *-images-idx3-ubyte "
        "and one *-labels-idx1-ubyte file (MNIST IDX, plain or .gz)",
    )


@dataclass(frozen=True)
class Intake:
    """A submission found on the command line: its private copy, loaded or with the reason it
    can't be, and what intake noticed (an id shared with another submission)."""

    id: str  # unique in the run, and so is the file-name form of it (slugify)
    path: Path  # the private copy that is graded
    submission: Submission | None
    problem: GraderError | None  # an invalid submission.toml or a refused archive or folder
    source: Path | None = None  # what was handed in
    notes: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{CHECK_MARKER}(id): the rubric check a test grades")
    if not config.getoption("submissions"):
        return
    try:
        rubric = load_rubric(Path(config.getoption("rubric") or DEFAULT_RUBRIC))
        profile = rubric.profile(config.getoption("profile"))
        report_dir = Path(config.getoption("report_dir"))
        paths = discover([Path(p) for p in config.getoption("submissions")])
        run_id = _run_of(config)[0]
        # ".intake": no submission's scratch folder (named by its slug) can be called that
        staging = settings_of(config).run_dir(run_id) / ".intake"
        intakes = _intake(paths, report_dir.resolve() / "intake", staging)
    except GraderError as error:
        raise pytest.UsageError(str(error)) from None
    try:
        gpus = check_selection(config.getoption("gpus"))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    seed = config.getoption("seed")
    if seed is not None and seed < 0:
        raise pytest.UsageError(f"--seed {seed}: give a whole number of at least 0")
    hidden_dir = config.getoption("hidden_dir")
    if hidden_dir is not None:
        try:
            read_hidden_dir(Path(hidden_dir))
        except GraderError as error:
            raise pytest.UsageError(str(error)) from None
    session = GradingSession(config, rubric, profile, intakes, gpus)
    config.stash[session_key] = session
    config.pluginmanager.register(session, "lab5-grader-session")


def _intake(paths: list[Path], unpack_into: Path, stage_into: Path) -> list[Intake]:
    """Take every submission in: a private copy, loaded. What goes wrong with one (a refused
    archive or folder, a bad manifest, anything unforeseen) is that submission's alone."""
    taken: list[Intake] = []
    for path in paths:
        submission: Submission | None = None
        problem: GraderError | None = None
        folder = path
        name = archive_stem(path) if is_archive(path) else path.name
        try:
            folder, name = take_in(path, unpack_into, stage_into)
            submission = load_submission(folder, default_id=name)
        except (ManifestError, IntakeRefused) as error:
            problem = error
        except Exception as error:  # whatever a hand-in provokes stops only that hand-in
            problem = IntakeRefused(
                f"{path.name}: could not be taken in ({type(error).__name__}: {error})"
            )
        submission_id = submission.id if submission else name
        taken.append(Intake(submission_id, folder, submission, problem, source=path))
    return _distinct(taken)


def _distinct(intakes: list[Intake]) -> list[Intake]:
    """The intakes with ids, and file names made of them, unique: a later one whose id or file
    name is taken gets its folder's name as a suffix and a note; an id that several submissions
    claim flags each of them. Nothing of one submission ever replaces another's."""
    claims: dict[str, list[Intake]] = {}
    for intake in intakes:
        claims.setdefault(intake.id, []).append(intake)
    ids: set[str] = set()
    slugs: dict[str, str] = {}  # file name -> the id that has it
    distinct = []
    for intake in intakes:
        notes, flags = list(intake.notes), list(intake.flags)
        claimants = claims[intake.id]
        if len(claimants) > 1:
            others = ", ".join(str(i.source) for i in claimants if i is not intake)
            flags.append(
                f"student id {intake.id!r} is claimed by {len(claimants)} submissions: this one "
                f"({intake.source}) and {others}; each was graded apart and nothing of one "
                "replaced the other's; check who handed in what"
            )
        unique = intake.id
        suffix = intake.source.name if intake.source else "2"
        number = 1
        while unique in ids or slugify(unique) in slugs:
            number += 1
            unique = (
                f"{intake.id} ({suffix})" if number == 2 else f"{intake.id} ({suffix} {number})"
            )
        if unique != intake.id:
            clash = slugs.get(slugify(intake.id), intake.id)
            notes.append(
                f"graded as {unique!r}: {intake.id!r} and the earlier submission {clash!r} would "
                f"share the name {slugify(intake.id)!r} of their artifacts, stored results and "
                "images"
            )
        ids.add(unique)
        slugs[slugify(unique)] = unique
        submission = intake.submission
        if submission is not None and unique != submission.id:
            submission = replace(submission, id=unique)
        distinct.append(
            replace(
                intake, id=unique, submission=submission, notes=tuple(notes), flags=tuple(flags)
            )
        )
    return distinct


_run_key = pytest.StashKey[tuple[str, "RunLock | None"]]()
_settings_key = pytest.StashKey[Settings]()


def settings_of(config: pytest.Config) -> Settings:
    """The host's settings, read from the environment once per process."""
    if _settings_key not in config.stash:
        config.stash[_settings_key] = Settings.from_env()
    return config.stash[_settings_key]


def _run_of(config: pytest.Config) -> tuple[str, RunLock | None]:
    """The run's id and, in the controlling process, its lock: taken before intake copies
    submissions into the run's folder, so that no reaper ever takes that folder for a dead
    run's. Workers grade under the controller's id."""
    if _run_key not in config.stash:
        worker_input = getattr(config, "workerinput", None)
        if worker_input is not None:
            config.stash[_run_key] = (worker_input[RUN_ID_KEY], None)
        else:
            run_id = new_run_id()
            try:
                lock = RunLock(settings_of(config), run_id)
            except OSError as error:
                raise GraderError(f"cannot start a grading run: {error}") from None
            config.stash[_run_key] = (run_id, lock)
    return config.stash[_run_key]


session_key = pytest.StashKey["GradingSession"]()


class SubmissionGrading:
    """What a check sees: one submission, the grader's stages for it, and its result record."""

    def __init__(self, session: GradingSession, intake: Intake) -> None:
        self.session = session
        self.intake = intake
        self.result = session.result_for(intake)

    @property
    def profile(self) -> Profile:
        return self.session.profile

    @property
    def submission(self) -> Submission:
        """The loaded submission; an invalid `submission.toml` fails every check with its reason."""
        __tracebackhide__ = True
        elapsed = time.monotonic() - self.session.started.setdefault(
            self.intake.id, time.monotonic()
        )
        limit = self.profile.limits.submission_seconds
        if elapsed > limit:
            fail_check(
                f"the submission used up its {limit:g} s (limit submission_seconds) after "
                f"{elapsed:.0f} s; this check and the ones left were not run"
            )
        if self.intake.submission is None:
            fix = "; fix submission.toml and hand in again"
            if isinstance(self.intake.problem, ArchiveRefused):
                fix = "; hand in an archive of regular files inside one folder"
            elif isinstance(self.intake.problem, IntakeRefused):
                fix = ""  # the reason says what to leave out
            fail_check(f"{self.intake.problem}{fix}")
        return self.intake.submission

    @property
    def grader(self) -> Grader:
        return self.session.grader

    def lint_dockerfile(self, half: Literal["train", "serve"]) -> None:
        """Fail unless the half's Dockerfile parses and builds on a CUDA-enabled image."""
        __tracebackhide__ = True
        submission = self.submission
        spec = submission.train if half == "train" else submission.serve
        what = "training" if half == "train" else "inference"
        try:
            dockerfile = read_dockerfile(spec.dockerfile, submission.shown(spec.dockerfile))
        except DockerfileError as error:
            if not spec.dockerfile.exists():
                lab_names = (
                    "Dockerfile.gpu or Dockerfile.cpu"
                    if half == "train"
                    else "Dockerfile.infer.gpu or Dockerfile.infer.cpu"
                )
                fail_check(
                    f"{error}: the {what} half is missing; put its Dockerfile at "
                    f"{half}/Dockerfile, or name it {lab_names} at the top of the hand-in as the "
                    f"lab's repository does, or set {half}.context and {half}.dockerfile in "
                    "submission.toml"
                )
            fail_check(str(error))
        problem = cuda_base_problem(dockerfile)
        if problem:
            fail_check(problem)

    def fail_unless_built(self, build: ImageBuild, what: str) -> None:
        """The build check's verdict: the builder's error and the end of its log."""
        __tracebackhide__ = True
        if not build.ok:
            log = self.log(build.build.log_path) if build.build else ""
            fail_check(f"the {what} image did not build: {build.error}", log)

    def _record_build(self, build: ImageBuild, role: str) -> ImageBuild:
        for base in build.base_images:
            if base.standin:
                self.result.note(
                    f"base image {base.reference} is not on this host and cannot be pulled; "
                    f"the build used {base.standin.description}"
                )
        self.result.measurements[f"{role}_base_images"] = [b.to_json() for b in build.base_images]
        if build.build:
            self.result.measurements[f"{role}_build_seconds"] = round(build.build.duration_s, 1)
        return build

    def _require(self, build: ImageBuild, what: str) -> ImageBuild:
        __tracebackhide__ = True
        if not build.ok:
            pytest.skip(f"skipped: the {what} image did not build")
        return build

    def training_build(self) -> ImageBuild:
        return self._record_build(self.grader.training_build(self.submission), "train")

    def require_training_build(self) -> ImageBuild:
        __tracebackhide__ = True
        return self._require(self.training_build(), "training")

    def training_run(self) -> TrainingRun:
        self.require_training_build()
        run = self.grader.training_run(self.submission)
        self.result.measurements["train_device"] = describe_device(self.grader.gpus)
        self.result.measurements["train_seconds"] = round(run.run.duration_s, 1)
        self.result.measurements["train_exit_code"] = run.run.exit_code
        if run.run.log_path.is_file():
            log = run.run.log_path.read_text(encoding="utf-8", errors="replace")
            self.result.training_curve = training_curve(log)
        for note in run.notes:
            self.result.note(note)
        if self.grader.gpus != "none" and "train_cuda_available" not in self.result.measurements:
            self._check_gpu_use()
        return run

    def _check_gpu_use(self) -> None:
        """On a GPU host: could the student's training use the GPU it was given?"""
        cuda = self.grader.cuda_in_training_image(self.submission)
        self.result.measurements["train_cuda_available"] = cuda
        standins = [
            base.reference
            for base in self.grader.training_build(self.submission).base_images
            if base.standin
        ]
        verdict = gpu_use_verdict(cuda, describe_device(self.grader.gpus), standins)
        if verdict is not None:
            kind, text = verdict
            (self.result.flag if kind == "flag" else self.result.note)(text)

    def require_finished_training(self) -> TrainingRun:
        __tracebackhide__ = True
        run = self.training_run()
        if not run.succeeded:
            pytest.skip("skipped: training did not finish successfully")
        return run

    def serving_build(self) -> ImageBuild:
        build = self._record_build(self.grader.serving_build(self.submission), "serve")
        if build.model_origin == "committed":
            self.result.note(
                "training produced no model; the inference image was built with the model "
                f"committed at {self.submission.serve.model_path} in the serve context"
            )
        return build

    def server(self) -> Server:
        __tracebackhide__ = True
        stopped_in = self.session.stopped.get(self.intake.id)
        if stopped_in is not None:
            pytest.skip(f"skipped: the server was stopped when {stopped_in} ran out of time")
        self._require(self.serving_build(), "inference")
        server = self.grader.server(self.submission)
        self.result.measurements["serve_device"] = describe_device(self.grader.gpus)
        for note in server.notes:
            self.result.note(note)
        return server

    def require_healthy_server(self) -> Server:
        __tracebackhide__ = True
        server = self.server()
        if not self.grader.server_healthy(self.submission).ok:
            pytest.skip("skipped: the server did not answer /ping")
        return server

    def require_ready_model(self) -> Server:
        __tracebackhide__ = True
        server = self.require_healthy_server()
        if not self.grader.model_ready(self.submission).ok:
            pytest.skip("skipped: the model has no READY worker")
        for note in server.notes:
            self.result.note(note)
        return server

    def log(self, path: Path, lines: int = 30) -> str:
        return log_excerpt(path, lines)


class GradingSession:
    """State of one grading run and the hooks that need it; registered as a plugin object."""

    def __init__(
        self,
        config: pytest.Config,
        rubric: Rubric,
        profile: Profile,
        intakes: list[Intake],
        gpus: str,
    ) -> None:
        self.config = config
        self.rubric = rubric
        self.profile = profile
        self.intakes = {intake.id: intake for intake in intakes}
        self.gpus = gpus
        self.gpu_ids: tuple[str, ...] = ()  # chosen by the controller, shared with workers
        self.started: dict[str, float] = {}
        self.stopped: dict[str, str] = {}  # submission id -> the check whose deadline stopped it
        self.unavailable: dict[
            str, list[str]
        ] = {}  # base image -> every source tried  # submission id -> when its first check began
        self.report_dir = Path(config.getoption("report_dir")).resolve()
        self.settings = settings_of(config)
        self._grader: Grader | None = None
        self._lock: RunLock | None = _run_of(config)[1]
        self.report: GradingReport | None = None
        self.force = bool(config.getoption("force"))
        self.keep_images = bool(config.getoption("keep_images"))
        self._progress = Progress(self._say)
        self.keys: dict[str, str] = {}  # submission id -> key of what its grading depends on
        self.reused: list[str] = []  # submissions whose stored results were taken
        # With pytest-xdist, the controlling process owns the run (id, lock, reaping, reports);
        # workers grade whole submissions and send their results along with each test report.
        worker_input = getattr(config, "workerinput", None)
        self.controls = worker_input is None
        self.run_id = _run_of(config)[0]
        self.workers = int(getattr(config.option, "numprocesses", 0) or 1)
        if worker_input:
            self.workers = int(worker_input[WORKERS_KEY])
        # The controller draws the seed once; every worker sends the same hidden digits.
        self.seed_given = config.getoption("seed") is not None
        given = config.getoption("seed")
        self.seed = int(worker_input[SEED_KEY]) if worker_input else given
        if self.seed is None:
            self.seed = secrets.randbelow(1 << 32)
        hidden_dir = config.getoption("hidden_dir")
        self.hidden_dir = Path(hidden_dir).resolve() if hidden_dir else None
        self._hidden: HiddenSample | None = None
        self.cleared: dict[str, set[str]] = {}  # submission id -> flags a TA cleared

    @property
    def grader(self) -> Grader:
        assert self._grader is not None, "the grading session has not started"
        return self._grader

    def hidden_sample(self) -> HiddenSample:
        """This run's hidden digits: drawn by the seed from the pool, each one augmented."""
        if self._hidden is None:
            pool = (
                read_hidden_dir(self.hidden_dir)
                if self.hidden_dir
                else self.grader.dataset.hidden_digits()
            )
            self._hidden = hidden_sample(pool, self.seed, self.profile.limits.heldout_digits)
        return self._hidden

    def _hidden_key(self) -> str | None:
        """What the hidden digits depend on beyond the dataset, for the stored results' key."""
        parts = []
        if self.seed_given:
            parts.append(f"seed {self.seed}")
        if self.hidden_dir is not None:
            digits = read_hidden_dir(self.hidden_dir)
            data = hashlib.sha256(digits.pixels + digits.labels).hexdigest()
            parts.append(f"hidden {data}")
        return "; ".join(parts) or None

    def review(self, result: SubmissionResult) -> None:
        """Flags, "unverified" notes and points of a result, under this run's rubric."""
        cleared = self.cleared.get(result.submission_id, set())
        review(result, self.profile.targets, self.rubric.integrity_penalty, cleared)

    def result_for(self, intake: Intake) -> SubmissionResult:
        assert self.report is not None
        result = self.report.submission(
            intake.id,
            intake.source or intake.path,
            self.report_dir / "artifacts" / slugify(intake.id),
        )
        for note in intake.notes:
            result.note(note)
        for flag in intake.flags:
            result.flag(flag, "student-id")
        if intake.submission:
            result.student_name = intake.submission.student_name
            for warning in intake.submission.warnings:
                result.note(warning)
        return result

    # --- session -------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before xdist starts workers: they need the GPUs chosen
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        try:
            client = connect()
            dataset = load_dataset(self.settings.datasets_dir / self.profile.dataset)
        except GraderError as error:
            raise pytest.UsageError(
                f"{error}\n(`grader setup --profile {self.profile.name}` prepares this host)"
            ) from None
        try:
            self.cleared = load_cleared(self.report_dir)
        except GraderError as error:
            raise pytest.UsageError(str(error)) from None
        if self.controls:
            reaped = reap_dead_runs(client, self.settings)
            if reaped:
                self._say(f"removed what {len(reaped)} interrupted run(s) left behind")
            if self._lock is None:
                try:
                    self._lock = RunLock(self.settings, self.run_id)
                except OSError as error:
                    raise pytest.UsageError(str(error)) from None
        engine_info = client.info()
        self._grader = Grader(
            client=client,
            settings=self.settings,
            profile=share_host(self.profile, engine_info, self.workers),
            threads=threads_per_container(self.profile, engine_info, self.workers),
            dataset=dataset,
            artifacts_root=self.report_dir / "artifacts",
            gpus=self._worker_gpus(client),
            say=self._say,
            keep_images=self.keep_images,
            image_cache_bytes=int(float(self.config.getoption("image_cache_gb")) * 1e9),
            image_sources=self._image_sources(),
            run_id=self.run_id,
        )
        worker_input = getattr(self.config, "workerinput", None)
        if worker_input is not None:
            for image, tried in json.loads(worker_input[UNAVAILABLE_KEY]).items():
                self.grader.base_images.remember_unavailable(image, tried)
        else:
            self._prepare_base_images()
        self.report = GradingReport(
            run_id=self.run_id,
            profile=self.profile.name,
            rubric=str(self.rubric.path),
            harness_version=__version__,
            seed=self.seed,
        )
        for intake in self.intakes.values():
            self.result_for(intake)
        self._take_stored_results(dataset)

    def _image_sources(self) -> ImageSources | None:
        given = self.config.getoption("image_sources_json")
        return ImageSources.from_json(json.loads(given)) if given else None

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
                self._say(
                    f"base image {image} is not available for {len(users)} submission"
                    f"{'s' * (len(users) > 1)} ({', '.join(users)}): {'; '.join(error.tried)}"
                )

    def _worker_gpus(self, client: docker.DockerClient) -> str:
        """This process's GPUs. The controller detects them once and hands them to workers."""
        worker_input = getattr(self.config, "workerinput", None)
        if worker_input is not None:
            gpus = tuple(g for g in worker_input[GPUS_KEY].split(",") if g)
            index = int(str(worker_input.get("workerid", "gw0")).removeprefix("gw") or 0)
            return gpus_for_worker(gpus, index, self.workers)
        if self.gpus != "none":
            labels = {RUN_LABEL: self.run_id, SUBMISSION_LABEL: "gpu-probe"}
            detection = detect_gpus(client, BASE_IMAGE, labels)
            self.gpu_ids = chosen_gpus(self.gpus, detection)
            use = ", ".join(self.gpu_ids) or "none: containers run on the CPU"
            self._say(f"GPUs: {detection.detail}; using {use}")
        return gpus_for_worker(self.gpu_ids, 0, 1)  # grading here means grading alone

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: object) -> object:
        return SubmissionScheduling(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: object) -> None:
        """pytest-xdist: every worker grades under the controller's run id."""
        workerinput = node.workerinput  # type: ignore[attr-defined]
        workerinput[RUN_ID_KEY] = self.run_id
        workerinput[WORKERS_KEY] = self.workers
        workerinput[GPUS_KEY] = ",".join(self.gpu_ids)
        workerinput[UNAVAILABLE_KEY] = json.dumps(self.unavailable)
        workerinput[SEED_KEY] = self.seed

    def _say(self, message: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        # Progress goes to the terminal at once, not into the captured output of the check.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"[grader] {terminal_safe(message, keep_newlines=True)}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.reused:
            session.exitstatus = pytest.ExitCode.OK  # every submission came from stored results
        if self._grader is not None:
            with contextlib.suppress(Exception):
                # A worker cleans up after its own submissions; the controller, after the run.
                self._grader.close(whole_run=self.controls)
        if self._lock is not None:
            self._lock.release()
        self._write(everything=True)

    def _write(self, everything: bool = False) -> None:
        if self.report is not None and self.controls:
            (write_reports if everything else write_results)(self.report, self.report_dir)

    # --- collection ----------------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "grading" in metafunc.fixturenames:
            ids = list(self.intakes)
            metafunc.parametrize("grading_intake", ids, ids=ids, scope="function")

    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        validate_collection(items, CHECK_MARKER)
        order = {check_id: index for index, check_id in enumerate(self.rubric.checks)}
        submissions = {sid: index for index, sid in enumerate(self.intakes)}

        def key(item: pytest.Item) -> tuple[int, int]:
            marker = item.get_closest_marker(CHECK_MARKER)
            sid = _intake_id(item)
            if marker is None or sid is None:
                return (len(submissions), 0)
            return (submissions[sid], order[marker.args[0]])

        items.sort(key=key)  # one submission's checks together, in rubric order
        if self.reused:
            skipped = [item for item in items if _intake_id(item) in self.reused]
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if _intake_id(item) not in self.reused]

    def _take_stored_results(self, dataset: Dataset) -> None:
        """Take unchanged submissions' stored results (re-scored) instead of grading them."""
        assert self.report is not None
        hidden = self._hidden_key()
        for intake in self.intakes.values():
            if intake.submission is None:
                continue
            key = submission_key(intake.path, self.rubric, self.profile, dataset, hidden)
            self.keys[intake.id] = key
            stored = None if self.force else load_stored(self.report_dir, intake.id, key)
            if stored is not None:
                cleared = self.cleared.get(intake.id, set())
                self.report.submissions[intake.id] = rescore(
                    stored, self.rubric, self.profile, cleared
                )
                self.reused.append(intake.id)
        if self.reused:
            self._say(
                f"{len(self.reused)} unchanged submission(s) taken from stored results "
                "(--force grades them again)"
            )
        self._progress.total = len(self.intakes) - len(self.reused)

    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """After a submission's last check, stop its server and remove its images."""
        current = _intake_id(item)
        if current is None or (nextitem is not None and _intake_id(nextitem) == current):
            return
        submission = self.intakes[current].submission
        if submission is not None and self._grader is not None:
            try:
                self._grader.finish(submission)
            except Exception as error:  # cleaning up must never cost the next submission
                self._say(f"cleaning up after {current} failed: {error}")
        item.stash[_finished_key] = True

    # --- deadlines -----------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Iterator[object]:
        """Run a check under its deadline (check_seconds, or what is left of submission_seconds).

        Passing it while the check still runs stops the submission's containers, so that a build,
        training run, exec or HTTP call it is blocked in returns; the check then fails naming the
        limit, whatever it raised on the way out.
        """
        intake_id = _intake_id(pyfuncitem)
        marker = pyfuncitem.get_closest_marker(CHECK_MARKER)
        if intake_id is None or marker is None or self._grader is None:
            return (yield)
        limits = self.profile.limits
        started = self.started.setdefault(intake_id, time.monotonic())
        budget = check_budget(
            limits.check_seconds, limits.submission_seconds, time.monotonic() - started
        )
        if budget.seconds <= 0:  # the check fails at once, saying so (SubmissionGrading)
            return (yield)
        intake = self.intakes[intake_id]
        check_id = str(marker.args[0])
        result = self.result_for(intake)
        measured = (
            dict(result.measurements),
            list(result.integrity_flags),
            list(result.wrong_digits),
        )
        watchdog = Watchdog(budget.seconds, lambda: self._stop_containers(intake, check_id))
        watchdog.start()
        try:
            outcome = yield
        except (KeyboardInterrupt, SystemExit):
            watchdog.disarm()
            raise
        except BaseException:
            if not watchdog.disarm():
                raise
            self._forget_partial(result, check_id, measured)
            _ran_out(watchdog, budget)
        if watchdog.disarm():
            self._forget_partial(result, check_id, measured)
            _ran_out(watchdog, budget)
        return outcome

    @staticmethod
    def _forget_partial(
        result: SubmissionResult,
        check_id: str,
        measured: tuple[dict[str, Any], list[Flag], list[WrongDigit]],
    ) -> None:
        """What a stopped check measured is partial (say, accuracy over the digits answered
        before the stop): it is left out, and so are flags drawn from it."""
        result.measurements, result.integrity_flags, result.wrong_digits = measured
        result.note(f"{check_id} was stopped at its time limit; what it had measured is left out")

    def _stop_containers(self, intake: Intake, check_id: str) -> str | None:
        """Kill the submission's running containers; None, or why the engine could not."""
        self.stopped[intake.id] = check_id
        if intake.submission is None:
            return None
        selector = {
            "label": [f"{RUN_LABEL}={self.run_id}", f"{SUBMISSION_LABEL}={intake.submission.id}"]
        }
        try:
            for container in self.grader.client.containers.list(
                filters=selector, ignore_removed=True
            ):
                with contextlib.suppress(docker.errors.APIError):  # it may have exited
                    container.kill()
        except (docker.errors.DockerException, requests.RequestException) as error:
            return str(error)
        return None

    # --- results -------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Iterator[None]:
        report = yield
        marker = item.get_closest_marker(CHECK_MARKER)
        intake_id = _intake_id(item)
        if marker is None or intake_id is None:
            return report
        if call.when == "teardown" and item.stash.get(_finished_key, False):
            report.user_properties.append((FINISHED_PROPERTY, intake_id))
        done = item.stash.setdefault(_recorded_key, False)
        if done or (call.when != "call" and call.excinfo is None):
            return report
        status, message, log = _outcome(call)
        check_id = marker.args[0]
        spec = self.rubric.checks[check_id]
        intake = self.intakes[intake_id]
        result = self.result_for(intake)
        result.checks[check_id] = CheckResult(
            check_id=check_id,
            title=spec.title,
            status=status,
            points=spec.points if status == "passed" else 0.0,
            max_points=spec.points,
            message=message,
            log_excerpt=log,
            duration_s=call.duration,
        )
        self.review(result)
        item.stash[_recorded_key] = True
        # The result travels with the report to the controlling process (itself, when serial).
        report.user_properties.append((RESULT_PROPERTY, json.dumps(submission_to_json(result))))
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        """On a terminal, the live board shows while the checks run."""
        board = self.config.stash.get(BOARD_KEY, None) if self.controls else None
        if board is not None:
            board.show(self._progress.board)
        try:
            return (yield)
        finally:
            if board is not None:
                board.hide()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.controls:
            self._progress.check_started(nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """In the controlling process: take results in and write the reports."""
        if not self.controls or self.report is None:
            return
        self._progress.seen(report)
        for name, value in report.user_properties:
            if name == RESULT_PROPERTY:
                result = submission_from_json(json.loads(str(value)))
                self.report.submissions[result.submission_id] = result
                self._write()
            elif name == FINISHED_PROPERTY and str(value) in self.report.submissions:
                finished = self.report.submissions[str(value)]
                if str(value) in self.keys:
                    store_result(self.report_dir, finished, self.keys[str(value)])
                self._write(everything=True)
                self._progress.finished(finished)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.report is None:
            return
        terminalreporter.section(
            f"lab5-grader: profile {self.profile.name}, run {self.report.run_id}"
        )
        for line in summary_lines(self.report):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"reports: {self.report_dir}")


_recorded_key = pytest.StashKey[bool]()
_finished_key = pytest.StashKey[bool]()
RESULT_PROPERTY = "lab5-grader.result"
FINISHED_PROPERTY = "lab5-grader.finished"
RUN_ID_KEY = "lab5_grader_run_id"
WORKERS_KEY = "lab5_grader_workers"
GPUS_KEY = "lab5_grader_gpus"
UNAVAILABLE_KEY = "lab5_grader_unavailable_images"
SEED_KEY = "lab5_grader_seed"


class ContainersNotStopped(Exception):
    """A check ran out of time and the engine did not stop the submission's containers."""


def _ran_out(watchdog: Watchdog, budget: Budget) -> NoReturn:
    __tracebackhide__ = True
    if watchdog.stop_problem is not None:
        raise ContainersNotStopped(
            f"the check ran past {budget.limit} ({budget.limit_seconds:g} s) and the Docker "
            f"engine did not stop the submission's containers: {watchdog.stop_problem}"
        ) from None
    if budget.limit == "check_seconds":
        fail_check(
            f"this check did not finish within {budget.limit_seconds:g} s (limit check_seconds) "
            "and was stopped, with the submission's containers; what it waited on (a build, the "
            "training, the server's answers) must finish well within that"
        )
    fail_check(
        f"the submission used up its {budget.limit_seconds:g} s (limit submission_seconds) during "
        "this check, which was stopped with the submission's containers; the checks left were "
        "not run"
    )


def _intake_id(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("grading_intake") if callspec else None


def _outcome(call: pytest.CallInfo[None]) -> tuple[Status, str, str]:
    if call.excinfo is None:
        return "passed", "", ""
    error = call.excinfo.value
    if isinstance(error, CheckFailure):
        return "failed", error.message, error.log
    if call.excinfo.errisinstance(pytest.skip.Exception):
        return "skipped", str(error.msg), ""  # type: ignore[attr-defined]
    if call.excinfo.errisinstance(pytest.fail.Exception):
        return "failed", str(error.msg), ""  # type: ignore[attr-defined]
    return classify_exception(error)


INFRASTRUCTURE_ERROR = "infrastructure error"


def classify_exception(error: BaseException) -> tuple[Status, str, str]:
    """Who is to blame for an exception that escaped a check.

    The engine refusing a request for what the submission holds (a 4xx: no such executable, an
    invalid image reference) is the student's failure, with the engine's reason. Anything else
    (the engine unreachable or failing with a 5xx, an assertion or exception in the harness's own
    code) is an infrastructure error: never the student's fault, and never to the student's gain,
    since it scores no points and is listed apart for the TA to re-run.
    """
    if isinstance(error, docker.errors.APIError):
        reason = (error.explanation or str(error)).strip()
        if error.is_client_error():
            refused = f"the Docker engine refused a request for this submission: {reason}"
            return "failed", refused, ""
        if error.is_server_error():
            return "error", f"{INFRASTRUCTURE_ERROR}: the Docker engine failed: {reason}", ""
    described = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return "error", f"{INFRASTRUCTURE_ERROR}: the grader could not run this check ({described})", ""


@pytest.fixture
def grading_intake() -> str:
    """The id of the submission under grading; `--submissions` parametrizes it over all of them."""
    pytest.skip("grading is off: pass --submissions PATH")


@pytest.fixture
def grading(request: pytest.FixtureRequest, grading_intake: str) -> SubmissionGrading:
    """The submission under grading, with its stages and its result record."""
    session = request.config.stash[session_key]
    return SubmissionGrading(session, session.intakes[grading_intake])


def checks_dir() -> Path:
    """The folder of the check modules (`grader/checks`)."""
    return Path(__file__).with_name("checks")


# pytest's own exit codes that mean "grading ran": all checks passed, or some failed.
GRADING_RAN = {pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED}

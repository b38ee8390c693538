"""The grading stages of one submission, as plain steps usable without pytest.

`Grader` runs each stage at most once per submission and remembers the outcome, so that every
check of the stage reads the same build and the same training run.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.types

from grader.accuracy import ReportedAccuracy, from_log, from_metrics
from grader.baseimages import BaseImage, BaseImageProvider
from grader.containers import (
    BuildResult,
    ResourceLimits,
    RunResult,
    build_image,
    grader_labels,
    run_to_exit,
)
from grader.dataset import Dataset
from grader.dockerfile import Dockerfile, read_dockerfile
from grader.errors import BaseImageUnavailable, DockerfileError
from grader.rubric import Profile
from grader.settings import Settings
from grader.submission import Submission

Say = Callable[[str], None]

DATA_MOUNT = "/data"
OUTPUT_MOUNT = "/output"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class TrainingBuild:
    """The training image build, or why it could not be attempted."""

    tag: str
    build: BuildResult | None
    base_images: tuple[BaseImage, ...]
    problem: str | None = None  # set when the build could not start (Dockerfile, base image)

    @property
    def ok(self) -> bool:
        return self.build is not None and self.build.ok

    @property
    def error(self) -> str:
        if self.problem:
            return self.problem
        assert self.build is not None
        return self.build.error or ""


@dataclass(frozen=True)
class TrainingRun:
    run: RunResult
    model_file: Path | None  # the copied-out model, when training wrote one
    metrics_file: Path | None
    reported: ReportedAccuracy | None
    notes: tuple[str, ...] = ()  # e.g. why metrics.json was not used

    @property
    def succeeded(self) -> bool:
        return self.run.exit_code == 0 and not self.run.timed_out


@dataclass
class Grader:
    """Grades submissions against one profile, in containers on one engine."""

    client: docker.DockerClient
    settings: Settings
    profile: Profile
    dataset: Dataset
    artifacts_root: Path
    gpus: str = "none"
    run_id: str = field(default_factory=new_run_id)
    say: Say = print
    _builds: dict[str, TrainingBuild] = field(default_factory=dict)
    _runs: dict[str, TrainingRun] = field(default_factory=dict)
    _base_images: BaseImageProvider | None = None

    def artifacts(self, submission: Submission) -> Path:
        path = self.artifacts_root / submission.slug
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def base_images(self) -> BaseImageProvider:
        if self._base_images is None:
            self._base_images = BaseImageProvider(self.client, self.settings, self.say)
        return self._base_images

    def image_tag(self, submission: Submission, role: str) -> str:
        return f"lab5-grader/{submission.slug}:{role}-{self.run_id}"

    # --- training ------------------------------------------------------------------------------

    def training_dockerfile(self, submission: Submission) -> Dockerfile:
        return read_dockerfile(submission.train.dockerfile)

    def training_build(self, submission: Submission) -> TrainingBuild:
        if submission.id not in self._builds:
            self._builds[submission.id] = self._build_training(submission)
        return self._builds[submission.id]

    def _build_training(self, submission: Submission) -> TrainingBuild:
        tag = self.image_tag(submission, "train")
        try:
            dockerfile = self.training_dockerfile(submission)
            bases = tuple(self.base_images.ensure(image) for image in dockerfile.external_images)
        except (DockerfileError, BaseImageUnavailable) as error:
            return TrainingBuild(tag, None, (), problem=str(error))
        if not submission.train.context.is_dir():
            return TrainingBuild(
                tag, None, bases, problem=f"build context {submission.train.context} is missing"
            )
        build = build_image(
            self.client,
            context=submission.train.context,
            dockerfile=submission.train.dockerfile,
            tag=tag,
            labels=grader_labels(self.run_id, submission.id, "train"),
            log_path=self.artifacts(submission) / "train-build.log",
            timeout_s=self.profile.limits.build_seconds,
        )
        return TrainingBuild(tag, build, bases)

    def training_run(self, submission: Submission) -> TrainingRun:
        if submission.id not in self._runs:
            build = self.training_build(submission)
            assert build.ok, "training_run needs a successful training build"
            self._runs[submission.id] = self._train(submission, build.tag)
        return self._runs[submission.id]

    def _train(self, submission: Submission, image: str) -> TrainingRun:
        artifacts = self.artifacts(submission)
        scratch = self.settings.home / "runs" / self.run_id / submission.slug / "output"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        scratch.chmod(0o777)  # the image may run as a non-root user
        limits = self.profile.limits
        try:
            run = run_to_exit(
                self.client,
                image=image,
                command=submission.train.command or None,
                environment={"MNIST_ROOT": DATA_MOUNT, "OUTPUT_DIR": OUTPUT_MOUNT},
                mounts=[
                    docker.types.Mount(
                        DATA_MOUNT, str(self.dataset.visible_dir), type="bind", read_only=True
                    ),
                    docker.types.Mount(OUTPUT_MOUNT, str(scratch), type="bind"),
                ],
                limits=ResourceLimits(
                    cpus=limits.cpus,
                    memory_mb=limits.memory_mb,
                    pids=limits.pids,
                    wall_seconds=limits.train_seconds,
                ),
                labels=grader_labels(self.run_id, submission.id, "train"),
                log_path=artifacts / "train.log",
                gpus=self.gpus,
            )
            model = _copy_out(scratch / submission.train.model_file, artifacts)
            metrics = _copy_out(scratch / "metrics.json", artifacts)
        finally:
            shutil.rmtree(scratch.parent, ignore_errors=True)
        reported, notes = _reported_accuracy(metrics, run.log_path)
        return TrainingRun(run, model, metrics, reported, notes)


def _copy_out(source: Path, folder: Path) -> Path | None:
    if not source.is_file() or source.is_symlink():
        return None
    target = folder / source.name
    shutil.copyfile(source, target)
    return target


def _reported_accuracy(
    metrics: Path | None, log_path: Path
) -> tuple[ReportedAccuracy | None, tuple[str, ...]]:
    from_file = from_metrics(metrics) if metrics else None
    if isinstance(from_file, ReportedAccuracy):
        return from_file, ()
    notes = (from_file,) if isinstance(from_file, str) else ()
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    return from_log(log), notes

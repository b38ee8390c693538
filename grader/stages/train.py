"""The training stage: the training image, run once in the sandbox, and what it left behind.

Training runs at most once per submission, even when it failed: every check of the stage reads
the same run, and a long training is never repeated for the next check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import docker.types
from docker.models.containers import Container

from grader.domain.accuracy import METRICS_MAX_BYTES, ReportedAccuracy, from_log, from_metrics
from grader.domain.dataset import Dataset
from grader.domain.submission import Submission
from grader.engine.containers import ResourceLimits, RunResult, run_to_exit, writable_layer_bytes
from grader.engine.gpus import torch_sees_cuda
from grader.engine.outputs import OutputFolder, copy_capped
from grader.stages.build import ImageBuild, ImageBuilder
from grader.stages.workspace import Workspace

DATA_MOUNT = "/data"
OUTPUT_MOUNT = "/output"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True, kw_only=True)
class TrainingRun:
    run: RunResult
    model_file: Path | None  # the copied-out model, when training wrote one
    metrics_file: Path | None
    reported: ReportedAccuracy | None
    notes: tuple[str, ...] = ()  # e.g. why metrics.json was not used
    model_problem: str | None = None  # why no model was copied out
    metrics_problem: str | None = None  # why metrics.json was not read

    @property
    def succeeded(self) -> bool:
        return self.run.exit_code == 0 and not self.run.timed_out


class TrainStage:
    """Builds each submission's training image and runs it with the data read-only and an
    output folder of bounded size, copying the model and metrics.json out of it."""

    def __init__(self, workspace: Workspace, builder: ImageBuilder, dataset: Dataset) -> None:
        self.workspace = workspace
        self.builder = builder
        self.dataset = dataset
        self._runs: dict[str, TrainingRun] = {}
        self._failures: dict[str, Exception] = {}

    def build(self, submission: Submission) -> ImageBuild:
        train = submission.train
        return self.builder.once(
            submission,
            "train",
            lambda: self.builder.build(
                submission,
                "train",
                train.context,
                train.dockerfile,
                submission.shown(train.dockerfile),
            ),
        )

    def run(self, submission: Submission) -> TrainingRun:
        if submission.id in self._failures:  # training runs once, even when it failed
            raise self._failures[submission.id]
        if submission.id not in self._runs:
            build = self.build(submission)
            assert build.ok, "training_run needs a successful training build"
            try:
                self._runs[submission.id] = self._train(submission, build.tag)
            except Exception as error:
                self._failures[submission.id] = error
                raise
        return self._runs[submission.id]

    def trained_model(self, submission: Submission) -> Path | None:
        """The model training just produced, or None (training did not build, run or write it)."""
        if not self.build(submission).ok:
            return None
        return self.run(submission).model_file

    def cuda_in_image(self, submission: Submission) -> bool | None:
        """Whether torch sees CUDA in the training image with this grader's GPUs (None: the
        image cannot tell, or it did not build)."""
        build = self.build(submission)
        if not build.ok:
            return None
        workspace = self.workspace
        return torch_sees_cuda(
            workspace.client, build.tag, workspace.gpus,
            workspace.labels(submission.id, "cuda-probe"),
            workspace.scratch(submission, "cuda-probe") / "probe.log",
        )  # fmt: skip

    def _train(self, submission: Submission, image: str) -> TrainingRun:
        workspace = self.workspace
        artifacts = workspace.artifacts(submission)
        limits = workspace.profile.limits
        writable_limit = int(limits.writable_mb * 1e6)
        output = OutputFolder(workspace.scratch(submission, "output"), int(limits.output_mb * 1e6))

        def guard(container: Container) -> str | None:
            written = writable_layer_bytes(container)
            if written > writable_limit:
                return (
                    f"training wrote {written / 1e6:,.0f} MB into the container's own file "
                    f"system, more than the limit of {limits.writable_mb:,.0f} MB; write only "
                    "the model (and metrics.json), and only to $OUTPUT_DIR"
                )
            return output.over_limit()

        with output:
            run = run_to_exit(
                workspace.client,
                image=image,
                command=submission.train.command or None,
                environment={"MNIST_ROOT": DATA_MOUNT, "OUTPUT_DIR": OUTPUT_MOUNT},
                mounts=[
                    docker.types.Mount(
                        DATA_MOUNT, str(self.dataset.visible_dir), type="bind", read_only=True
                    ),
                    docker.types.Mount(OUTPUT_MOUNT, str(output.path), type="bind"),
                ],
                limits=ResourceLimits(
                    cpus=limits.cpus,
                    threads=workspace.threads,
                    memory_mb=limits.memory_mb,
                    pids=limits.pids,
                    wall_seconds=limits.train_seconds,
                ),
                labels=workspace.labels(submission.id, "train"),
                log_path=artifacts / "train.log",
                gpus=workspace.gpus,
                guard=guard,
            )
            model, model_problem = _copy_out(
                output.path, submission.train.model_file, artifacts, int(limits.model_mb * 1e6)
            )
            metrics, metrics_problem = _copy_out(
                output.path, METRICS_FILE, artifacts, METRICS_MAX_BYTES
            )
        if output.note:  # the host's doing, not the submission's
            workspace.tell_host_note(output.note, run.log_path)
        reported, metrics_problem = _reported_accuracy(metrics, metrics_problem, run.log_path)
        notes = (metrics_problem,) if metrics_problem else ()
        return TrainingRun(
            run=run,
            model_file=model,
            metrics_file=metrics,
            reported=reported,
            notes=notes,
            model_problem=model_problem,
            metrics_problem=metrics_problem,
        )


def _copy_out(
    folder: Path, name: str, artifacts: Path, max_bytes: int
) -> tuple[Path | None, str | None]:
    """Copy `name` from a training's output folder to `artifacts`: the copy, or why there is
    none (None, None when it was simply not written). Nothing is read through a link."""
    source = folder / name
    if not source.resolve().is_relative_to(folder.resolve()):
        return None, f"{name} leads out of $OUTPUT_DIR through a symbolic link; it was not read"
    if not source.exists() and not source.is_symlink():
        return None, None
    target = artifacts / source.name
    problem = copy_capped(source, target, max_bytes)
    return (None, problem) if problem else (target, None)


def _reported_accuracy(
    metrics: Path | None, problem: str | None, log_path: Path
) -> tuple[ReportedAccuracy | None, str | None]:
    """The accuracy metrics.json reports, else the log's; and why metrics.json was not used."""
    from_file = from_metrics(metrics) if metrics else None
    if isinstance(from_file, ReportedAccuracy):
        return from_file, None
    if isinstance(from_file, str):
        problem = from_file
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    return from_log(log), problem

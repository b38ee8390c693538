"""The grading stages of one submission, as plain steps usable without pytest.

`Grader` runs each stage at most once per submission and remembers the outcome, so that every
check of the stage reads the same build and the same training run.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import docker
import docker.types
from docker.models.containers import Container

from grader.domain.accuracy import METRICS_MAX_BYTES, ReportedAccuracy, from_log, from_metrics
from grader.domain.dataset import Dataset
from grader.domain.dockerfile import read_dockerfile
from grader.domain.errors import BaseImageUnavailable, DockerfileError, EngineFault
from grader.domain.rubric import Profile
from grader.domain.settings import Settings
from grader.domain.submission import Submission, slugify
from grader.engine.baseimages import BaseImage, BaseImageProvider, ImageSources
from grader.engine.buildnet import build_network, firewall_problem
from grader.engine.containers import (
    RUN_LABEL,
    SUBMISSION_LABEL,
    BuildLimits,
    BuildResult,
    ResourceLimits,
    RunResult,
    build_image,
    grader_labels,
    own_network,
    remove_labelled,
    run_to_exit,
    start_server,
    stop_server,
    writable_layer_bytes,
)
from grader.engine.gpus import torch_sees_cuda
from grader.engine.outputs import OutputFolder, copy_capped
from grader.engine.runs import keep_images_of, prune_kept_images
from grader.engine.standins import BASE_IMAGE
from grader.stages.labsteps import ALPINE, StepResult, interactive_session, run_listing
from grader.stages.serving import (
    INFERENCE_PORT,
    MANAGEMENT_PORT,
    SERVER_PORTS,
    Outcome,
    Server,
    prepare_serve_context,
    wait_healthy,
    wait_model_ready,
)
from grader.stages.torchserve import TorchServeAPI

Say = Callable[[str], None]

DATA_MOUNT = "/data"
OUTPUT_MOUNT = "/output"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


LAB_STEPS = "lab-steps"  # the submission label of containers that serve every submission


def share_host(profile: Profile, engine_info: dict[str, object], workers: int) -> Profile:
    """The profile with limits that let `workers` submissions run at once on the engine's host.

    Memory is cut so that all of them fit (a fifth of it is left to everything else): too much
    would end in the kernel's OOM killer. CPU is shared by the kernel's equal weights instead
    of hard quotas: each container keeps the profile's ceiling (at most the host's cores), gets
    at least its fair share when all are busy, and idle cores when others wait on image builds
    or server start-ups. Its compute threads are cut to the fair share (`threads_per_container`).
    """
    cores = float(engine_info.get("NCPU") or 1)  # type: ignore[arg-type]
    memory_mb = int(engine_info.get("MemTotal") or 0) // (1 << 20)  # type: ignore[call-overload]
    limits = replace(profile.limits, cpus=min(profile.limits.cpus, cores))
    if workers > 1:
        limits = replace(
            limits, memory_mb=min(limits.memory_mb, max(512, int(memory_mb * 0.8 / workers)))
        )
    return replace(profile, limits=limits)


def threads_per_container(
    profile: Profile, engine_info: dict[str, object], workers: int
) -> int | None:
    """OpenMP threads for each container when `workers` submissions share the host (None: as
    many as the CPU limit). More threads than cores, all spinning, cost more than they bring:
    3 trainings of 2 threads each on 2 cores took 1.7x as long as with 1 thread each.
    """
    if workers <= 1:
        return None
    cores = float(engine_info.get("NCPU") or 1)  # type: ignore[arg-type]
    return max(1, min(math.ceil(profile.limits.cpus), int(cores // workers)))


@dataclass(frozen=True)
class ImageBuild:
    """An image build, or why it could not be attempted."""

    tag: str
    build: BuildResult | None
    base_images: tuple[BaseImage, ...]
    problem: str | None = None  # set when the build could not start (Dockerfile, base image)
    model_origin: str | None = None  # inference image: "trained" or "committed" weights

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
    model_problem: str | None = None  # why no model was copied out
    metrics_problem: str | None = None  # why metrics.json was not read

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
    keep_images: bool = False
    image_sources: ImageSources | None = None  # where base images come from (None: defaults)
    image_cache_bytes: int = 20 * 10**9  # what kept images may take (see prune_kept_images)
    threads: int | None = None  # compute threads per container (None: the CPU limit's)
    _builds: dict[tuple[str, str], ImageBuild] = field(default_factory=dict)
    _runs: dict[str, TrainingRun] = field(default_factory=dict)
    _train_failures: dict[str, Exception] = field(default_factory=dict)
    _build_faults: dict[tuple[str, str], EngineFault] = field(default_factory=dict)
    _told: set[str] = field(default_factory=set)  # notes about the host, said once
    _servers: dict[str, Server] = field(default_factory=dict)
    _waits: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    _base_images: BaseImageProvider | None = None
    _touched: set[str] = field(default_factory=set)  # submissions this grader worked on
    _alpine_steps: dict[str, StepResult] = field(default_factory=dict)
    _firewall: tuple[str | None] | None = None  # why builds cannot be cut off from the host
    _told_firewall: bool = False

    def artifacts(self, submission: Submission) -> Path:
        self._touched.add(submission.id)
        path = self.artifacts_root / submission.slug
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def base_images(self) -> BaseImageProvider:
        if self._base_images is None:
            self._base_images = BaseImageProvider(
                self.client, self.settings, self.say, self.image_sources
            )
        return self._base_images

    def image_tag(self, submission: Submission, role: str) -> str:
        return f"lab5-grader/{submission.slug}:{role}-{self.run_id}"

    # --- training ------------------------------------------------------------------------------

    def training_build(self, submission: Submission) -> ImageBuild:
        key = (submission.id, "train")
        if key in self._build_faults:  # every check of the stage reads the same outcome
            raise self._build_faults[key]
        if key not in self._builds:
            train = submission.train
            self._builds[key] = self._build(
                submission,
                "train",
                train.context,
                train.dockerfile,
                submission.shown(train.dockerfile),
            )
        return self._builds[key]

    def _build(
        self,
        submission: Submission,
        role: str,
        context: Path,
        dockerfile_path: Path,
        shown_as: Path,
        model_origin: str | None = None,
    ) -> ImageBuild:
        tag = self.image_tag(submission, role)
        try:
            dockerfile = read_dockerfile(dockerfile_path, shown_as)
            bases = tuple(self.base_images.ensure(image) for image in dockerfile.external_images)
        except (DockerfileError, BaseImageUnavailable) as error:
            return ImageBuild(tag, None, (), problem=str(error))
        if not context.is_dir():
            return ImageBuild(
                tag, None, bases, problem=f"build context {submission.shown(context)}/ is missing"
            )
        for _attempt in range(BUILD_ATTEMPTS):
            build = self._build_once(submission, role, context, dockerfile_path, tag)
            if build.ok or not engine_store_race(build.error or ""):
                return ImageBuild(tag, build, bases, model_origin=model_origin)
            self.say(f"{submission.id}: the engine lost an image under the {role} build "
                     f"({build.error}); building again")  # fmt: skip
        fault = EngineFault(
            f"the Docker engine lost an image under the {role} build {BUILD_ATTEMPTS} times: "
            f"{build.error}"
        )
        self._build_faults[(submission.id, role)] = fault
        raise fault

    def _build_once(
        self, submission: Submission, role: str, context: Path, dockerfile_path: Path, tag: str
    ) -> BuildResult:
        return self._build_off_host(
            submission,
            role,
            context=context,
            dockerfile=dockerfile_path,
            tag=tag,
            labels=grader_labels(self.run_id, submission.id, role),
            log_path=self.artifacts(submission) / f"{role}-build.log",
            timeout_s=self.profile.limits.build_seconds,
            max_context_bytes=int(self.profile.limits.build_context_mb * 1e6),
            limits=BuildLimits(
                memory_mb=self.profile.limits.memory_mb,
                cpus=self.profile.limits.cpus,
                pids=self.profile.limits.pids,
            ),
        )

    def _build_off_host(self, submission: Submission, role: str, **build: Any) -> BuildResult:
        """`build_image` on the profile's build network: the internet but not this host, or no
        network at all (see grader/engine/buildnet.py)."""
        if self._firewall is None:
            self._firewall = (firewall_problem(self.client),)
        problem = self._firewall[0]
        labels = grader_labels(self.run_id, submission.id, f"{role}-build-network")
        name = f"lab5-grader-{self.run_id}-{submission.slug}-{role}-build"
        with build_network(
            self.client, self.profile.build_network, name, labels, problem
        ) as network:
            result = build_image(self.client, network_mode=network.mode, **build)
        if network.note:
            if not self._told_firewall:
                self._told_firewall = True
                self.say(network.note)
            with open(result.log_path, "a", encoding="utf-8") as log:
                log.write(f"\n[grader] {network.note}\n")
        return result

    def training_run(self, submission: Submission) -> TrainingRun:
        if submission.id in self._train_failures:  # training runs once, even when it failed
            raise self._train_failures[submission.id]
        if submission.id not in self._runs:
            build = self.training_build(submission)
            assert build.ok, "training_run needs a successful training build"
            try:
                self._runs[submission.id] = self._train(submission, build.tag)
            except Exception as error:
                self._train_failures[submission.id] = error
                raise
        return self._runs[submission.id]

    def scratch(self, submission: Submission, name: str) -> Path:
        """A per-run working folder on the host, removed when the submission is finished."""
        return self.settings.run_dir(self.run_id) / submission.slug / name

    def _train(self, submission: Submission, image: str) -> TrainingRun:
        artifacts = self.artifacts(submission)
        limits = self.profile.limits
        writable_limit = int(limits.writable_mb * 1e6)
        output = OutputFolder(self.scratch(submission, "output"), int(limits.output_mb * 1e6))

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
                self.client,
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
                    threads=self.threads,
                    memory_mb=limits.memory_mb,
                    pids=limits.pids,
                    wall_seconds=limits.train_seconds,
                ),
                labels=grader_labels(self.run_id, submission.id, "train"),
                log_path=artifacts / "train.log",
                gpus=self.gpus,
                guard=guard,
            )
            model, model_problem = _copy_out(
                output.path, submission.train.model_file, artifacts, int(limits.model_mb * 1e6)
            )
            metrics, metrics_problem = _copy_out(
                output.path, "metrics.json", artifacts, METRICS_MAX_BYTES
            )
        if output.note:  # the host's doing, not the submission's: told once, and in the log
            if output.note not in self._told:
                self._told.add(output.note)
                self.say(output.note)
            with open(run.log_path, "a", encoding="utf-8") as log:
                log.write(f"\n[grader] {output.note}\n")
        reported, metrics_problem = _reported_accuracy(metrics, metrics_problem, run.log_path)
        notes = (metrics_problem,) if metrics_problem else ()
        return TrainingRun(run, model, metrics, reported, notes, model_problem, metrics_problem)

    def cuda_in_training_image(self, submission: Submission) -> bool | None:
        """Whether torch sees CUDA in the training image with this grader's GPUs (None: the
        image cannot tell, or it did not build)."""
        build = self.training_build(submission)
        if not build.ok:
            return None
        return torch_sees_cuda(
            self.client, build.tag, self.gpus,
            grader_labels(self.run_id, submission.id, "cuda-probe"),
            self.scratch(submission, "cuda-probe") / "probe.log",
        )  # fmt: skip

    # --- inference -----------------------------------------------------------------------------

    def trained_model(self, submission: Submission) -> Path | None:
        """The model training just produced, or None (training did not build, run or write it)."""
        if not self.training_build(submission).ok:
            return None
        return self.training_run(submission).model_file

    def serving_build(self, submission: Submission) -> ImageBuild:
        """The inference image, built from a copy of the serve context holding the model."""
        key = (submission.id, "serve")
        if key in self._build_faults:
            raise self._build_faults[key]
        if key in self._builds:
            return self._builds[key]
        serve = submission.serve
        tag = self.image_tag(submission, "serve")
        if not serve.context.is_dir():
            build = ImageBuild(
                tag,
                None,
                (),
                problem=f"build context {submission.shown(serve.context)}/ is missing",
            )
        else:
            context, origin = prepare_serve_context(
                serve.context,
                serve.model_path,
                self.trained_model(submission),
                self.scratch(submission, "serve-context"),
            )
            if context is None:
                build = ImageBuild(tag, None, (), problem=origin)
            elif not serve.dockerfile.is_relative_to(serve.context):
                build = ImageBuild(
                    tag,
                    None,
                    (),
                    problem=f"{submission.shown(serve.dockerfile)} is outside the serve context",
                )
            else:
                dockerfile = context / serve.dockerfile.relative_to(serve.context)
                shown = submission.shown(serve.dockerfile)
                build = self._build(submission, "serve", context, dockerfile, shown, origin)
        self._builds[key] = build
        return build

    def server(self, submission: Submission) -> Server:
        """The started inference container (the serving build must have succeeded)."""
        if submission.id not in self._servers:
            build = self.serving_build(submission)
            assert build.ok, "server needs a successful serving build"
            limits = self.profile.limits
            labels = grader_labels(self.run_id, submission.id, "serve")
            # The harness reaches the server only through its forwarder, made from the image
            # the stand-ins start from (present wherever grading runs).
            relay_image = self.base_images.ensure(BASE_IMAGE).reference
            running = start_server(
                self.client,
                image=build.tag,
                ports=SERVER_PORTS,
                limits=ResourceLimits(
                    limits.cpus, limits.memory_mb, limits.pids, 0, threads=self.threads
                ),
                labels=labels,
                network=own_network(
                    self.client, f"lab5-grader-{self.run_id}-{submission.slug}", labels
                ),
                relay_image=relay_image,
                forwarder_labels=grader_labels(self.run_id, submission.id, "forwarder"),
                gpus=self.gpus,
            )
            published = {INFERENCE_PORT, MANAGEMENT_PORT} <= running.host_ports.keys()
            api = (
                TorchServeAPI(
                    running.url(INFERENCE_PORT),
                    running.url(MANAGEMENT_PORT),
                    predict_timeout_s=limits.predict_timeout_seconds,
                )
                if published
                else None
            )
            self._servers[submission.id] = Server(running, api)
        return self._servers[submission.id]

    def server_healthy(self, submission: Submission) -> Outcome:
        key = (submission.id, "healthy")
        if key not in self._waits:
            timeout = self.profile.limits.server_ready_seconds
            self._waits[key] = wait_healthy(self.server(submission), timeout)
        return self._waits[key]

    def model_ready(self, submission: Submission) -> Outcome:
        key = (submission.id, "ready")
        if key not in self._waits:
            timeout = self.profile.limits.server_ready_seconds
            self._waits[key] = wait_model_ready(
                self.server(submission), submission.serve.model_name, timeout
            )
        return self._waits[key]

    def alpine_step(self, step: Literal["run", "interactive"]) -> StepResult:
        """Lab step 1 on this host, done once per grader: every submission shares the answer."""
        if step not in self._alpine_steps:
            # Workers run this at the same time: each removes only its own containers.
            labels = grader_labels(self.run_id, LAB_STEPS, f"alpine-{os.getpid()}")
            try:
                self.base_images.ensure(ALPINE)
            except BaseImageUnavailable as error:
                result = StepResult(False, f"{error}; run `grader setup` to build the stand-in")
            else:
                # A container's start-up and first answers: as long as a server's may take.
                timeout = self.profile.limits.server_ready_seconds
                if step == "run":
                    result = run_listing(self.client, ALPINE, labels, timeout)
                else:
                    result = interactive_session(ALPINE, labels, timeout)
                remove_labelled(self.client, labels, images=False)
            self._alpine_steps[step] = result
        return self._alpine_steps[step]

    def finish(self, submission: Submission) -> None:
        """Stop the submission's server (keeping its log) and remove its containers and images."""
        server = self._servers.pop(submission.id, None)
        if server is not None:
            stop_server(server.running, self.artifacts(submission) / "server.log")
        remove_labelled(
            self.client,
            {RUN_LABEL: self.run_id, SUBMISSION_LABEL: submission.id},
            images=not self.keep_images,
        )
        shutil.rmtree(self.scratch(submission, ""), ignore_errors=True)

    def close(self, whole_run: bool = True) -> None:
        """Stop what is still running and remove what was made: this grader's, or the run's."""
        for submission_id, server in self._servers.items():
            stop_server(server.running, self.artifacts_root / slugify(submission_id) / "server.log")
        self._servers.clear()
        images = not self.keep_images
        if whole_run:
            remove_labelled(self.client, {RUN_LABEL: self.run_id}, images=images)
            shutil.rmtree(self.settings.run_dir(self.run_id), ignore_errors=True)
            if self.keep_images:
                keep_images_of(self.settings, self.run_id)
                removed = prune_kept_images(
                    self.client, self.settings, self.image_cache_bytes, self.run_id
                )
                if removed:
                    self.say(
                        f"removed {len(removed)} image(s) kept by earlier runs, to stay within "
                        f"{self.image_cache_bytes / 1e9:g} GB"
                    )
            return
        for submission_id in self._touched:
            labels = {RUN_LABEL: self.run_id, SUBMISSION_LABEL: submission_id}
            remove_labelled(self.client, labels, images=images)


# The classic builder's cache shares layers between submissions' builds: when one submission's
# images are removed while another build takes a cached layer of theirs, the engine can lose the
# layer under that build. No Dockerfile causes these errors; the build is tried again.
ENGINE_STORE_RACE = re.compile(  # the engine's own words, at the start of its error
    r"(failed to get digest sha256:[0-9a-f]+: open /var/lib/docker/|No such image: sha256:)"
)
BUILD_ATTEMPTS = 3


def engine_store_race(error: str) -> bool:
    """Whether a build failed because the engine lost an image under it, not for its content."""
    return ENGINE_STORE_RACE.match(error.strip()) is not None


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

"""The grading stages of one submission, as plain steps usable without pytest.

`Grader` puts the stages together (grader/stages/env.py, build.py, train.py, serve.py) over one
`Workspace`, and removes what they made when a submission, or the run, is finished. Each stage
runs at most once per submission and remembers the outcome, so that every check of the stage
reads the same build and the same training run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import docker

from grader.domain.dataset import Dataset
from grader.domain.rubric import Profile
from grader.domain.settings import Settings
from grader.domain.submission import Submission
from grader.engine.baseimages import BaseImageProvider, ImageSources
from grader.engine.containers import RUN_LABEL, SUBMISSION_LABEL, remove_labelled
from grader.engine.runs import keep_images_of, prune_kept_images
from grader.stages.build import ImageBuild, ImageBuilder, engine_store_race
from grader.stages.env import EnvStage, Step
from grader.stages.labsteps import StepResult
from grader.stages.serve import ServeStage
from grader.stages.serving import Outcome, Server
from grader.stages.sharing import share_host, threads_per_container
from grader.stages.train import TrainingRun, TrainStage
from grader.stages.workspace import Say, Workspace, new_run_id

__all__ = [
    "Grader",
    "ImageBuild",
    "TrainingRun",
    "engine_store_race",
    "new_run_id",
    "share_host",
    "threads_per_container",
]

DEFAULT_IMAGE_CACHE_BYTES = 20 * 10**9


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
    image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES  # what kept images may take
    threads: int | None = None  # compute threads per container (None: the CPU limit's)
    workspace: Workspace = field(init=False)
    env: EnvStage = field(init=False)
    builds: ImageBuilder = field(init=False)
    training: TrainStage = field(init=False)
    serving: ServeStage = field(init=False)

    def __post_init__(self) -> None:
        self.workspace = Workspace(
            client=self.client,
            settings=self.settings,
            profile=self.profile,
            artifacts_root=self.artifacts_root,
            run_id=self.run_id,
            say=self.say,
            gpus=self.gpus,
            threads=self.threads,
            image_sources=self.image_sources,
        )
        self.env = EnvStage(self.workspace)
        self.builds = ImageBuilder(self.workspace)
        self.training = TrainStage(self.workspace, self.builds, self.dataset)
        self.serving = ServeStage(self.workspace, self.builds, self.training)

    # What the checks and the plugin ask for, by stage.

    def artifacts(self, submission: Submission) -> Path:
        return self.workspace.artifacts(submission)

    @property
    def base_images(self) -> BaseImageProvider:
        return self.workspace.base_images

    def alpine_step(self, step: Step) -> StepResult:
        """Lab step 1 on this host, done once per grader: every submission shares the answer."""
        return self.env.step(step)

    def training_build(self, submission: Submission) -> ImageBuild:
        return self.training.build(submission)

    def training_run(self, submission: Submission) -> TrainingRun:
        return self.training.run(submission)

    def cuda_in_training_image(self, submission: Submission) -> bool | None:
        return self.training.cuda_in_image(submission)

    def trained_model(self, submission: Submission) -> Path | None:
        return self.training.trained_model(submission)

    def serving_build(self, submission: Submission) -> ImageBuild:
        return self.serving.build(submission)

    def server(self, submission: Submission) -> Server:
        return self.serving.server(submission)

    def server_healthy(self, submission: Submission) -> Outcome:
        return self.serving.healthy(submission)

    def model_ready(self, submission: Submission) -> Outcome:
        return self.serving.model_ready(submission)

    # Clean-up: only what carries this run's labels, so other runs on the host keep theirs.

    def finish(self, submission: Submission) -> None:
        """Stop the submission's server (keeping its log) and remove its containers and images."""
        self.serving.stop(submission)
        remove_labelled(
            self.client,
            {RUN_LABEL: self.run_id, SUBMISSION_LABEL: submission.id},
            images=not self.keep_images,
        )
        shutil.rmtree(self.workspace.scratch(submission, ""), ignore_errors=True)

    def close(self, whole_run: bool = True) -> None:
        """Stop what is still running and remove what was made: this grader's, or the run's."""
        self.serving.stop_all()
        images = not self.keep_images
        if whole_run:
            remove_labelled(self.client, {RUN_LABEL: self.run_id}, images=images)
            shutil.rmtree(self.settings.run_dir(self.run_id), ignore_errors=True)
            if self.keep_images:
                self._prune_kept_images()
            return
        for submission_id in self.workspace.touched:
            labels = {RUN_LABEL: self.run_id, SUBMISSION_LABEL: submission_id}
            remove_labelled(self.client, labels, images=images)

    def _prune_kept_images(self) -> None:
        """Keep this run's images for the next run, within `image_cache_bytes` for all runs'."""
        keep_images_of(self.settings, self.run_id)
        removed = prune_kept_images(self.client, self.settings, self.image_cache_bytes, self.run_id)
        if removed:
            self.say(
                f"removed {len(removed)} image(s) kept by earlier runs, to stay within "
                f"{self.image_cache_bytes / 1e9:g} GB"
            )

"""What the stages of one grader share: the engine, the profile, the run's id, its folders.

Every container, image and file a stage makes carries this run's and the submission's labels,
or lives under the run's folders, so that finishing a submission (or the run) removes exactly
what its stages made and nothing of other runs on the same host.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from grader.domain.rubric import Profile
from grader.domain.settings import Settings
from grader.domain.submission import Submission
from grader.engine.baseimages import BaseImageProvider, ImageSources
from grader.engine.containers import grader_labels

Say = Callable[[str], None]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class Workspace:
    """The engine, limits, names and folders of one grader, handed to each of its stages."""

    client: docker.DockerClient
    settings: Settings
    profile: Profile
    artifacts_root: Path
    run_id: str
    say: Say = print
    gpus: str = "none"
    threads: int | None = None  # compute threads per container (None: the CPU limit's)
    image_sources: ImageSources | None = None  # where base images come from (None: defaults)
    touched: set[str] = field(default_factory=set)  # submissions this grader worked on
    _told: set[str] = field(default_factory=set)  # topics of notes about the host, said once
    _base_images: BaseImageProvider | None = None

    def artifacts(self, submission: Submission) -> Path:
        """The submission's folder of logs and copied-out files, kept for the reports."""
        self.touched.add(submission.id)
        path = self.artifacts_root / submission.slug
        path.mkdir(parents=True, exist_ok=True)
        return path

    def scratch(self, submission: Submission, name: str) -> Path:
        """A per-run working folder on the host, removed when the submission is finished."""
        return self.settings.run_dir(self.run_id) / submission.slug / name

    def image_tag(self, submission: Submission, role: str) -> str:
        return f"lab5-grader/{submission.slug}:{role}-{self.run_id}"

    def labels(self, submission_id: str, role: str) -> dict[str, str]:
        """The labels of what a stage makes, by which finishing the submission removes it."""
        return grader_labels(self.run_id, submission_id, role)

    @property
    def base_images(self) -> BaseImageProvider:
        """One provider per grader: it remembers each image's answer for the rest of the run."""
        if self._base_images is None:
            self._base_images = BaseImageProvider(
                self.client, self.settings, self.say, self.image_sources
            )
        return self._base_images

    def tell_host_note(self, note: str, log_path: Path, topic: str | None = None) -> None:
        """A note about the host, not about the submission: said once per `topic` (the note
        itself by default), so a batch does not repeat it, and written into the log it concerns,
        so each submission's log explains itself."""
        topic = note if topic is None else topic
        if topic not in self._told:
            self._told.add(topic)
            self.say(note)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n[grader] {note}\n")

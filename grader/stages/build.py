"""Image builds of a submission: each built once, off the host's network, tried again when the
engine loses a cached layer under it.

Every check of a stage reads the same build (or the same engine fault), so a build is never
repeated for the next check and two checks never disagree about it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader.domain.dockerfile import read_dockerfile
from grader.domain.errors import BaseImageUnavailable, DockerfileError, EngineFault
from grader.domain.reasons import Reason, reason
from grader.domain.submission import Submission
from grader.engine.baseimages import BaseImage
from grader.engine.buildnet import build_network, firewall_problem
from grader.engine.containers import BuildLimits, BuildResult, build_image
from grader.stages.workspace import Workspace

# The classic builder's cache shares layers between submissions' builds: when one submission's
# images are removed while another build takes a cached layer of theirs, the engine can lose the
# layer under that build. No Dockerfile causes these errors; the build is tried again.
ENGINE_STORE_RACE = re.compile(  # the engine's own words, at the start of its error
    r"(failed to get digest sha256:[0-9a-f]+: open /var/lib/docker/|No such image: sha256:)"
)
BUILD_ATTEMPTS = 3
BUILD_NETWORK_NOTE = "build-network"  # its note is said once per grader, whatever its reason
# What the builder says when a COPY or ADD source is not in the context: the classic builder
# ("COPY failed: file not found in build context ...: stat <file>: file does not exist") and
# BuildKit ("failed to compute cache key: ... "/<file>" not found").
COPY_MISSING = re.compile(
    r"(?:COPY|ADD) failed: (?:.*?stat (?P<stat>\S+): file does not exist|no source files)"
    r"|failed to compute cache key: .*?\"/?(?P<key>[^\"]+)\" not found"
)
UNNAMED_FILE = "(the builder does not name it)"


def engine_store_race(error: str) -> bool:
    """Whether a build failed because the engine lost an image under it, not for its content."""
    return ENGINE_STORE_RACE.match(error.strip()) is not None


@dataclass(frozen=True)
class ImageBuild:
    """An image build, or why it could not be attempted."""

    tag: str
    build: BuildResult | None
    base_images: tuple[BaseImage, ...]
    problem: str | None = None  # set when the build could not start (Dockerfile, base image)
    model_origin: str | None = None  # inference image: "trained" or "committed" weights
    failed_for: Reason | None = None  # why it failed or could not start, as data

    @classmethod
    def not_started(
        cls,
        tag: str,
        problem: str,
        base_images: tuple[BaseImage, ...] = (),
        reason: Reason | None = None,
    ) -> ImageBuild:
        """A build that could not start, and why: its Dockerfile, a base image, its context."""
        return cls(tag, build=None, base_images=base_images, problem=problem, failed_for=reason)

    @property
    def reason(self) -> Reason | None:
        """Why the build failed, as data (without the check id), or None when it did not."""
        if self.ok:
            return None
        return self.failed_for or reason("failed", error=self.error)

    @property
    def ok(self) -> bool:
        return self.build is not None and self.build.ok

    @property
    def error(self) -> str:
        if self.problem:
            return self.problem
        assert self.build is not None
        return self.build.error or ""


def build_failure(build: BuildResult, limit_s: float) -> Reason | None:
    """Why a build the builder ran failed, from what the builder said; None when it did not."""
    if build.ok:
        return None
    if build.timed_out:
        return reason("timeout", limit_s=limit_s)
    copy = COPY_MISSING.search(build.error or "")
    if copy:
        return reason("copy-missing", file=copy["stat"] or copy["key"] or UNNAMED_FILE)
    return reason("failed", error=build.error or "")


class ImageBuilder:
    """Builds the images of one grader's submissions and remembers each outcome by role."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._builds: dict[tuple[str, str], ImageBuild] = {}
        self._faults: dict[tuple[str, str], EngineFault] = {}
        self._firewall: tuple[str | None] | None = None  # why builds reach the host, asked once

    def once(self, submission: Submission, role: str, make: Callable[[], ImageBuild]) -> ImageBuild:
        """The `role` image of the submission, made by `make` the first time it is asked for.

        A recorded engine fault is raised again before anything of the stage is set up anew.
        """
        key = (submission.id, role)
        if key in self._faults:  # every check of the stage reads the same outcome
            raise self._faults[key]
        if key not in self._builds:
            self._builds[key] = make()
        return self._builds[key]

    def build(
        self,
        submission: Submission,
        role: str,
        context: Path,
        dockerfile_path: Path,
        shown_as: Path,
        model_origin: str | None = None,
    ) -> ImageBuild:
        """Build `dockerfile_path` in `context`, its base images found or provided first."""
        tag = self.workspace.image_tag(submission, role)
        try:
            dockerfile = read_dockerfile(dockerfile_path, shown_as)
            bases = tuple(
                self.workspace.base_images.ensure(image) for image in dockerfile.external_images
            )
        except BaseImageUnavailable as error:
            return ImageBuild.not_started(tag, str(error), reason=error.reason)
        except DockerfileError as error:
            unreadable = reason("dockerfile", file=str(shown_as))
            return ImageBuild.not_started(tag, str(error), reason=unreadable)
        if not context.is_dir():
            shown = submission.shown(context)
            missing = f"build context {shown}/ is missing"
            folder = reason("context-missing", folder=f"{shown}/")
            return ImageBuild.not_started(tag, missing, bases, folder)
        for _attempt in range(BUILD_ATTEMPTS):
            build = self._build_once(submission, role, context, dockerfile_path, tag)
            if build.ok or not engine_store_race(build.error or ""):
                limit_s = self.workspace.profile.limits.build_seconds
                return ImageBuild(
                    tag, build, bases, model_origin=model_origin,
                    failed_for=build_failure(build, limit_s),
                )  # fmt: skip
            self.workspace.say(f"{submission.id}: the engine lost an image under the {role} build "
                               f"({build.error}); building again")  # fmt: skip
        fault = EngineFault(
            f"the Docker engine lost an image under the {role} build {BUILD_ATTEMPTS} times: "
            f"{build.error}"
        )
        self._faults[(submission.id, role)] = fault
        raise fault

    def _build_once(
        self, submission: Submission, role: str, context: Path, dockerfile_path: Path, tag: str
    ) -> BuildResult:
        """One `build_image` on the profile's build network: the internet but not this host, or
        no network at all (see grader/engine/buildnet.py)."""
        workspace = self.workspace
        limits = workspace.profile.limits
        log_path = workspace.artifacts(submission) / f"{role}-build.log"
        if self._firewall is None:
            self._firewall = (firewall_problem(workspace.client),)
        problem = self._firewall[0]
        labels = workspace.labels(submission.id, f"{role}-build-network")
        name = f"lab5-grader-{workspace.run_id}-{submission.slug}-{role}-build"
        with build_network(
            workspace.client, workspace.profile.build_network, name, labels, problem
        ) as network:
            result = build_image(
                workspace.client,
                context=context,
                dockerfile=dockerfile_path,
                tag=tag,
                labels=workspace.labels(submission.id, role),
                log_path=log_path,
                timeout_s=limits.build_seconds,
                max_context_bytes=int(limits.build_context_mb * 1e6),
                limits=BuildLimits(memory_mb=limits.memory_mb, cpus=limits.cpus, pids=limits.pids),
                network_mode=network.mode,
            )
        if network.note:
            workspace.tell_host_note(network.note, result.log_path, topic=BUILD_NETWORK_NOTE)
        return result

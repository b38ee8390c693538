"""`grader images`: the base images submissions need, where each comes from, and the images the
harness made or provided (listed, and pruned without touching anything else)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from grader.domain.dockerfile import read_dockerfile
from grader.domain.errors import BaseImageUnavailable, GraderError
from grader.domain.intake import is_archive
from grader.domain.settings import Settings
from grader.domain.submission import Submission, discover, load_submission
from grader.engine.baseimages import (
    ARCHIVE_SUFFIXES,
    PROVIDED_RECORD,
    BaseImageProvider,
    Nowhere,
    archive_tags,
    load_archive,
    provided_images,
    record_provided,
    where_from,
)
from grader.engine.containers import RUN_LABEL, list_images
from grader.engine.runs import images_in_use, run_state
from grader.engine.standins import STANDIN_LABEL


def needed_images(submissions: Iterable[Submission]) -> dict[str, list[str]]:
    """Every external base image of the submissions' Dockerfiles -> the submissions using it."""
    needed: dict[str, list[str]] = {}
    for submission in submissions:
        for half in (submission.train, submission.serve):
            try:
                dockerfile = read_dockerfile(half.dockerfile, submission.shown(half.dockerfile))
            except GraderError:
                continue  # graded as a Dockerfile problem, not an image problem
            for image in dockerfile.external_images:
                users = needed.setdefault(image, [])
                if submission.id not in users:
                    users.append(submission.id)
    return needed


def submissions_in(paths: list[Path]) -> list[Submission]:
    """The submission folders among `paths` that load (archives and broken manifests are left
    to grading, which reports them)."""
    found = []
    for path in discover(paths):
        if is_archive(path):
            continue
        with contextlib.suppress(GraderError):
            found.append(load_submission(path))
    return found


def plan(provider: BaseImageProvider, needed: dict[str, list[str]]) -> tuple[list[str], int]:
    """One line per image: where it will come from, or every source tried; and how many have
    no source."""
    lines, missing = [], 0
    for image, users in sorted(needed.items()):
        source = where_from(provider, image)
        used_by = f"({len(users)} submission{'s' * (len(users) > 1)})"
        if isinstance(source, Nowhere):
            missing += 1
            lines.append(f"MISSING {image} {used_by}: " + "; ".join(source.tried))
        else:
            lines.append(f"{source:<12} {image} {used_by}")
    return lines, missing


def prefetch(provider: BaseImageProvider, needed: dict[str, list[str]]) -> tuple[list[str], int]:
    """Get every image now, from the first source that has it."""
    lines, missing = [], 0
    for image in sorted(needed):
        try:
            base = provider.ensure(image)
        except BaseImageUnavailable as error:
            missing += 1
            lines.append(f"MISSING {error}")
            continue
        lines.append(f"{base.origin:<12} {image} ({base.image_id})")
    return lines, missing


def load_archives(client: docker.DockerClient, settings: Settings, folder: Path) -> list[str]:
    """Load every `docker save` archive in `folder`; one line per archive."""
    if not folder.is_dir():
        raise GraderError(f"{folder}: no such folder of image archives")
    lines = []
    for archive in sorted(folder.iterdir()):
        if not archive.name.lower().endswith(ARCHIVE_SUFFIXES):
            continue
        tags = archive_tags(archive)
        try:
            load_archive(client, archive)
        except (docker.errors.APIError, OSError) as error:
            lines.append(f"FAILED {archive.name}: {error}")
            continue
        for tag in tags:
            record_provided(settings, tag, f"archive {archive}")
        lines.append(f"loaded {archive.name}: {', '.join(tags) or 'untagged'}")
    return lines or [f"no image archive ({', '.join(ARCHIVE_SUFFIXES)}) in {folder}"]


STANDIN_ORIGIN = "stand-in"


@dataclass(frozen=True)
class MadeImage:
    tag: str
    size: int
    origin: str


def harness_images(client: docker.DockerClient, settings: Settings) -> list[MadeImage]:
    """The images the harness made or provided: stand-ins, kept submission images, and the
    tags it added for mirrors, archives and stand-ins."""
    made: dict[str, MadeImage] = {}
    provided = provided_images(settings)
    for image in list_images(client, {"label": STANDIN_LABEL}):
        # Its own name, and the public names the harness gave it; not others' tags on it.
        for tag in (t for t in image.tags if t.startswith("lab5-grader/") or t in provided):
            family = image.labels.get(STANDIN_LABEL)
            made[tag] = MadeImage(tag, image.size, f"{STANDIN_ORIGIN} ({family})")
    for image in list_images(client, {"label": RUN_LABEL}):
        for tag in image.tags:
            run = image.labels.get(RUN_LABEL)
            made[tag] = MadeImage(tag, image.size, f"graded in run {run}")
    for tag, origin in provided.items():
        with contextlib.suppress(docker.errors.ImageNotFound):
            found = client.images.get(tag)
            made.setdefault(tag, MadeImage(tag, found.attrs.get("Size", 0), origin))
    return sorted(made.values(), key=lambda image: image.tag)


@dataclass(frozen=True)
class Pruned:
    removed: list[str]  # tags removed
    spared: list[str]  # tags left because a grading run that may still be going uses them


def prune(client: docker.DockerClient, settings: Settings, standins: bool = False) -> Pruned:
    """Remove every tag `harness_images` lists (an image goes when its last tag does), the
    stand-ins' only with `standins`; nothing else. What a live grading run on this host (any
    `GRADER_HOME`) uses stays: its own images, and the base images it said it builds on (all of
    them, while one has not said yet)."""
    in_use = images_in_use(settings)
    used_ids = set()
    for tag in in_use or ():
        with contextlib.suppress(docker.errors.APIError):
            used_ids.add(client.images.get(tag).id)
    graded: dict[str, str] = {}  # graded image tag -> its run
    for image in list_images(client, {"label": RUN_LABEL}):
        for tag in image.tags:
            graded[tag] = image.labels.get(RUN_LABEL, "")
    removed, spared = [], []
    for made in harness_images(client, settings):
        if made.origin.startswith(STANDIN_ORIGIN) and not standins:
            continue
        if made.tag in graded:
            # Only a provably dead run's: a live one is still grading with it.
            if run_state(settings, graded[made.tag]) != "dead":
                spared.append(made.tag)
                continue
        elif in_use is None or made.tag in in_use or _image_id(client, made.tag) in used_ids:
            spared.append(made.tag)
            continue
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            client.images.remove(made.tag)
            removed.append(made.tag)
    record = settings.home / PROVIDED_RECORD
    if standins and not spared:
        record.unlink(missing_ok=True)
    return Pruned(removed, spared)


def _image_id(client: docker.DockerClient, tag: str) -> str | None:
    with contextlib.suppress(docker.errors.APIError):
        return str(client.images.get(tag).id)
    return None

"""Which grading runs are alive, and reaping what dead ones left behind.

A run holds an exclusive lock on `<home>/runs/<run-id>/.lock` for as long as its process lives;
the kernel releases it however the process ends (SIGINT, SIGTERM, SIGKILL). A run whose lock can
be taken is dead: its containers and images (found by label) and its folder are removed, except
the images of a run that ended with `--keep-images`: those stay until `prune_kept_images` bounds
them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from typing import IO

import docker

from grader.containers import RUN_LABEL, remove_labelled
from grader.settings import Settings

LOCK_NAME = ".lock"


class RunLock:
    """Marks a run as alive while held."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.folder = settings.run_dir(run_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = open(self.folder / LOCK_NAME, "w")  # noqa: SIM115
        fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def is_alive(settings: Settings, run_id: str) -> bool:
    lock = settings.run_dir(run_id) / LOCK_NAME
    if not lock.is_file():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def reap_dead_runs(client: docker.DockerClient, settings: Settings) -> list[str]:
    """Remove the containers, images and folders of every run that is no longer alive."""
    runs_dir = settings.runs_dir
    run_ids = {p.name for p in runs_dir.iterdir() if p.is_dir()} if runs_dir.is_dir() else set()
    for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        run_ids.add(container.labels.get(RUN_LABEL, ""))
    for image in client.images.list(filters={"label": RUN_LABEL}):
        run_ids.add((image.labels or {}).get(RUN_LABEL, ""))
    for network in client.networks.list(filters={"label": RUN_LABEL}):
        run_ids.add((network.attrs.get("Labels") or {}).get(RUN_LABEL, ""))
    reaped = []
    for run_id in sorted(run_ids - {""}):
        if is_alive(settings, run_id):
            continue
        kept = (settings.kept_images_dir / run_id).is_file()
        with contextlib.suppress(docker.errors.APIError):
            remove_labelled(client, {RUN_LABEL: run_id}, images=not kept)
        shutil.rmtree(runs_dir / run_id, ignore_errors=True)
        reaped.append(run_id)
    return reaped


def keep_images_of(settings: Settings, run_id: str) -> None:
    """Mark a run's images as kept on purpose: reaping leaves them to `prune_kept_images`."""
    settings.kept_images_dir.mkdir(parents=True, exist_ok=True)
    (settings.kept_images_dir / run_id).touch()


def prune_kept_images(
    client: docker.DockerClient, settings: Settings, budget_bytes: int, current_run: str
) -> list[str]:
    """Remove the oldest images kept by ended runs (marked by `keep_images_of`) until those left,
    the current run's included, take at most `budget_bytes` of their own: layers shared with
    other images, such as the base images, are not counted. Images of other runs are not
    touched. Returns the tags removed.
    """
    marked = (
        set(os.listdir(settings.kept_images_dir)) if settings.kept_images_dir.is_dir() else set()
    )
    own_size = {
        image["Id"]: max(0, image.get("Size", 0) - max(0, image.get("SharedSize", 0)))
        for image in client.df().get("Images") or []
    }
    kept = [
        image
        for image in client.images.list(filters={"label": RUN_LABEL})
        if image.labels.get(RUN_LABEL) in marked | {current_run}
    ]
    kept.sort(key=lambda image: image.attrs.get("Created", ""), reverse=True)
    total, removed, left = 0, [], set()
    for image in kept:
        total += own_size.get(image.id, 0)
        run_id = image.labels[RUN_LABEL]
        if total > budget_bytes and run_id != current_run:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)
                removed.extend(image.tags or [image.short_id])
                total -= own_size.get(image.id, 0)
                continue
        left.add(run_id)
    for run_id in marked - left:
        (settings.kept_images_dir / run_id).unlink(missing_ok=True)
    return removed

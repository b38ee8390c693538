"""Which grading runs are alive, and reaping what dead ones left behind.

A run holds an exclusive lock on `<home>/runs/<run-id>/.lock` for as long as its process lives;
the kernel releases it however the process ends (SIGINT, SIGTERM, SIGKILL). A run whose lock can
be taken is dead: its containers and images (found by label) and its folder are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
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
    reaped = []
    for run_id in sorted(run_ids - {""}):
        if is_alive(settings, run_id):
            continue
        with contextlib.suppress(docker.errors.APIError):
            remove_labelled(client, {RUN_LABEL: run_id})
        shutil.rmtree(runs_dir / run_id, ignore_errors=True)
        reaped.append(run_id)
    return reaped

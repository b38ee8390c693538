"""Which grading runs are alive, and reaping what dead ones left behind.

A run holds an exclusive lock on `<run-id>.lock` in a host-wide folder (the same whatever
`GRADER_HOME` the run uses) for as long as its process lives; the kernel releases it however the
process ends (SIGINT, SIGTERM, SIGKILL), and the file stays as the proof. A run is dead only when
a lock file of it exists and can be taken: a run with no lock file anywhere (made by another
host's harness on a shared engine, or by a test) is not provably dead and is left alone. The
containers, networks and images of a dead run (found by label) and its folders are removed,
except the images of a run that ended with `--keep-images`: those stay until
`prune_kept_images` bounds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO, Literal

import docker

from grader.domain.settings import Settings
from grader.engine.containers import RUN_LABEL, list_images, remove_labelled
from grader.engine.outputs import _unmount as unmount

LOCK_NAME = ".lock"  # in a run's folder: where runs of earlier versions held their lock
# Host-wide, in this order: the first one that can be written holds new locks; all are read.
# Both outlive a reboot's clean-up of /run, so that a run cut off by a reboot is still dead.
LOCK_FOLDERS = (Path("/var/lib/lab5-grader/runs"), Path("/var/tmp/lab5-grader-runs"))

RunState = Literal["alive", "dead", "unknown"]
# What the harness makes run ids of; anything else found in a label or a folder is not a run's.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def lock_folders() -> tuple[Path, ...]:
    """Where run locks live: `GRADER_RUN_LOCKS` when set (every run on the host must then use
    the same), else LOCK_FOLDERS."""
    given = os.environ.get("GRADER_RUN_LOCKS")
    return (Path(given),) if given else LOCK_FOLDERS


def _writable_lock_folder() -> Path:
    for folder in lock_folders():
        with contextlib.suppress(OSError):
            if not folder.is_dir():
                folder.mkdir(parents=True)
                if folder.parent == Path("/var/tmp"):
                    folder.chmod(0o1777)  # every user's runs lock here; none removes another's
        if os.access(folder, os.W_OK):
            return folder
    raise OSError(
        "no folder for run locks can be written: "
        + ", ".join(str(f) for f in lock_folders())
        + "; set GRADER_RUN_LOCKS to a folder every grading run on this host can write"
    )


class RunLock:
    """Marks a run as alive while held."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.folder = settings.run_dir(run_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        lock_folder = _writable_lock_folder()
        # Locked before it gets its name, so that no reaper ever sees it free while alive.
        pending = lock_folder / f".{run_id}.{os.getpid()}"
        self._handle: IO[str] | None = open(pending, "w")  # noqa: SIM115
        fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._record: dict[str, object] = {"pid": os.getpid(), "home": str(settings.home)}
        self._write()
        os.chmod(pending, 0o644)
        self.path = lock_folder / f"{run_id}.lock"
        os.replace(pending, self.path)

    def record_images(self, images: Iterable[str]) -> None:
        """Say which base images the run uses: `grader images prune` leaves them while it lives
        (until this is said, a live run counts as using every base image)."""
        self._record["images"] = sorted(set(images))
        self._write()

    def _write(self) -> None:
        assert self._handle is not None
        self._handle.seek(0)
        self._handle.truncate()
        json.dump(self._record, self._handle)
        self._handle.flush()

    def release(self) -> None:
        """Free the lock; its file stays as the proof that the run is over."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _lock_files(settings: Settings, run_id: str) -> list[Path]:
    candidates = [folder / f"{run_id}.lock" for folder in lock_folders()]
    candidates.append(settings.run_dir(run_id) / LOCK_NAME)
    return [path for path in candidates if path.is_file()]


def _held(lock: Path) -> bool:
    try:
        handle = open(lock)  # noqa: SIM115
    except OSError:
        return False  # gone since it was listed: released and reaped
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def run_state(settings: Settings, run_id: str) -> RunState:
    """alive: its lock is held; dead: a lock file of it exists and is free (or it ended keeping
    its images, marked in this home); unknown: nothing proves either."""
    locks = _lock_files(settings, run_id)
    if any(_held(lock) for lock in locks):
        return "alive"
    if locks or (settings.kept_images_dir / run_id).is_file():
        return "dead"
    return "unknown"


def is_alive(settings: Settings, run_id: str) -> bool:
    return run_state(settings, run_id) == "alive"


def live_runs(settings: Settings) -> list[str]:
    """Every run on this host whose lock is held, whatever its `GRADER_HOME`."""
    return sorted(run_id for run_id in _locked_run_ids() if is_alive(settings, run_id))


def _locked_run_ids() -> set[str]:
    run_ids: set[str] = set()
    for folder in lock_folders():
        if folder.is_dir():
            run_ids.update(
                p.name.removesuffix(".lock") for p in folder.iterdir() if p.name.endswith(".lock")
            )
    return {run_id for run_id in run_ids if RUN_ID.fullmatch(run_id)}


def _records(settings: Settings, run_id: str) -> list[dict[str, object]]:
    """What the run wrote into its lock files (pid, home, base images used)."""
    records = []
    for lock in _lock_files(settings, run_id):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(lock.read_text() or "{}")
            if isinstance(record, dict):
                records.append(record)
    return records


def _homes(settings: Settings, run_id: str) -> set[Path]:
    """The `GRADER_HOME`s the run used: this one, and the one its lock file names."""
    homes = {settings.home}
    for record in _records(settings, run_id):
        home = record.get("home")
        if isinstance(home, str) and Path(home).is_absolute():
            homes.add(Path(home))
    return homes


def images_in_use(settings: Settings) -> set[str] | None:
    """The base images the live runs on this host use; None when one of them has not said
    yet (it may use any)."""
    used: set[str] = set()
    for run_id in live_runs(settings):
        said = [
            images
            for record in _records(settings, run_id)
            if isinstance(images := record.get("images"), list)
        ]
        if not said:
            return None
        used.update(str(image) for images in said for image in images)
    return used


def reap_dead_runs(
    client: docker.DockerClient, settings: Settings, among: Iterable[str] | None = None
) -> list[str]:
    """Remove the containers, networks, images and folders of every run on this host that is
    provably dead (`among` those run ids only, when given); alive and unknown runs are left."""
    runs_dir = settings.runs_dir
    run_ids = {p.name for p in runs_dir.iterdir() if p.is_dir()} if runs_dir.is_dir() else set()
    run_ids |= _locked_run_ids()
    # Other runs remove their containers meanwhile: one gone between listing and inspecting
    # is no longer of interest.
    listed = client.containers.list(all=True, filters={"label": RUN_LABEL}, ignore_removed=True)
    for container in listed:
        run_ids.add(container.labels.get(RUN_LABEL, ""))
    for image in list_images(client, {"label": RUN_LABEL}):
        run_ids.add(image.labels.get(RUN_LABEL, ""))
    for network in client.networks.list(filters={"label": RUN_LABEL}):
        run_ids.add((network.attrs.get("Labels") or {}).get(RUN_LABEL, ""))
    if among is not None:
        run_ids &= set(among)
    reaped = []
    for run_id in sorted(r for r in run_ids if RUN_ID.fullmatch(r)):
        if run_state(settings, run_id) != "dead":
            continue
        homes = [replace(settings, home=home) for home in _homes(settings, run_id)]
        kept = any((home.kept_images_dir / run_id).is_file() for home in homes)
        removed = 0
        with contextlib.suppress(docker.errors.APIError):
            removed = remove_labelled(client, {RUN_LABEL: run_id}, images=not kept)
        for home in homes:
            if home.run_dir(run_id).is_dir():
                _remove_folder(home.run_dir(run_id))
                removed += 1
        if not _leftovers(client, run_id, images=not kept):
            # Nothing of it is left to prove dead: its lock file has done its work.
            for lock in _lock_files(settings, run_id):
                with contextlib.suppress(OSError):
                    lock.unlink()
        if removed:  # a run that ended well left only its lock file
            reaped.append(run_id)
    return reaped


def _remove_folder(folder: Path) -> None:
    """Remove a dead run's folder, unmounting first what the run mounted in it (a training
    output's tmpfs stays mounted when its run is killed)."""
    for mount in sorted(_mounts_under(folder), key=lambda p: len(p.parts), reverse=True):
        unmount(mount)
    shutil.rmtree(folder, ignore_errors=True)


def _mounts_under(folder: Path) -> list[Path]:
    try:
        table = Path("/proc/self/mounts").read_text()
    except OSError:
        return []
    found = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 1:
            # Spaces and the like are written as octal escapes (\040).
            point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))
            if point.is_relative_to(folder) and point != folder:
                found.append(point)
    return found


def _leftovers(client: docker.DockerClient, run_id: str, images: bool) -> bool:
    selector: dict[str, str | list[str] | bool] = {"label": f"{RUN_LABEL}={run_id}"}
    with contextlib.suppress(docker.errors.APIError):
        return bool(
            client.containers.list(all=True, filters=selector, ignore_removed=True)
            or client.networks.list(filters=selector)
            or (images and list_images(client, selector))
        )
    return True


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
        for image in list_images(client, {"label": RUN_LABEL})
        if image.labels.get(RUN_LABEL) in marked | {current_run}
    ]
    kept.sort(key=lambda image: image.created, reverse=True)
    total = 0
    removed: list[str] = []
    left: set[str] = set()
    for image in kept:
        total += own_size.get(image.id, 0)
        run_id = image.labels[RUN_LABEL]
        if total > budget_bytes and run_id != current_run:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(image.id, force=True)
                removed.extend(image.tags or [image.id.removeprefix("sha256:")[:12]])
                total -= own_size.get(image.id, 0)
                continue
        left.add(run_id)
    for run_id in marked - left:
        (settings.kept_images_dir / run_id).unlink(missing_ok=True)
    return removed

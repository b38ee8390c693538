"""A cgroup of the harness's own as the parent of an image build's step containers.

The classic builder runs each RUN step in a container the build API gives only memory and CPU
limits, and no process limit. It does place the step containers under the `cgroupparent` it is
given; a limit set on that parent holds for all of them together. The engine neither limits nor
removes such a parent, so the harness creates it with its limits and removes it afterwards.

Supported: the cgroupfs driver on cgroup v1 (one hierarchy per controller) and v2 (unified).
With the systemd driver the parent would have to be a systemd slice, which only systemd can
limit; builds then keep the per-step memory and CPU limits and get no process limit (the note
says so).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "lab5-grader-build-"


class LimitsReached(NamedTuple):
    """Which limits of a build its steps reached."""

    pids: bool
    memory: bool


NO_LIMIT_REACHED = LimitsReached(pids=False, memory=False)


@dataclass
class BuildCgroup:
    """A parent cgroup for one build, or why there is none (`parent` None, `note` set)."""

    parent: str | None  # the engine's `cgroupparent`
    memory_bytes: int
    pids: int
    version: int = 1
    note: str | None = None
    root: Path = CGROUP_ROOT
    _created: list[Path] = field(default_factory=list)

    def limits_reached(self) -> LimitsReached:
        """Whether the build's steps reached the process limit and the memory limit so far, read
        from the parent's peak counters (its event counters miss what happened in the step
        containers, which are gone by now)."""
        if self.parent is None:
            return NO_LIMIT_REACHED
        name = self.parent.lstrip("/")
        if self.version == 2:
            pids_peak = _number(self.root / name / "pids.peak")
            memory_peak = _number(self.root / name / "memory.peak")
        else:
            pids_peak = _number(self.root / "pids" / name / "pids.peak")
            memory_peak = _number(self.root / "memory" / name / "memory.max_usage_in_bytes")
        # A step is killed when its next allocation would pass the limit: the peak stays a
        # little under it.
        return LimitsReached(
            pids=pids_peak >= self.pids, memory=memory_peak >= self.memory_bytes * 0.97
        )

    def remove(self, wait_s: float = 15.0) -> bool:
        """Remove the parent in every hierarchy (what the engine made in the others too), once
        the step containers under it are gone; True when nothing is left."""
        if self.parent is None:
            return True
        name = self.parent.lstrip("/")
        if self.version == 2:
            paths = [self.root / name]
        else:
            paths = [hierarchy / name for hierarchy in _hierarchies(self.root)]
        deadline = time.monotonic() + wait_s
        while True:
            left = [path for path in paths if path.exists() and not _remove_tree(path)]
            if not left:
                return True
            if time.monotonic() >= deadline:
                # A step container the engine did not remove: its processes are the build's.
                for path in left:
                    _kill_all(path)
                return not [path for path in left if path.exists() and not _remove_tree(path)]
            time.sleep(0.5)


def build_cgroup(
    engine_info: dict[str, object],
    memory_mb: int,
    pids: int,
    owner: str = "",
    root: Path = CGROUP_ROOT,
) -> BuildCgroup:
    """Create a limited parent cgroup for one build, for the engine described by `engine_info`
    (`docker info`), named after `owner` (a run id); a BuildCgroup without a parent, and the
    reason, where that is impossible."""
    memory = memory_mb << 20
    driver = str(engine_info.get("CgroupDriver") or "cgroupfs")
    version = int(str(engine_info.get("CgroupVersion") or "1"))
    owner = re.sub(r"[^A-Za-z0-9_.-]", "", owner)
    name = f"{PREFIX}{owner}{'-' * bool(owner)}{secrets.token_hex(4)}"
    if driver != "cgroupfs":
        return BuildCgroup(parent=None, memory_bytes=memory, pids=pids, version=version, note=(
            f"the engine uses the {driver} cgroup driver: image builds get memory and CPU limits "
            "per step but no process limit"
        ))  # fmt: skip
    cgroup = BuildCgroup(
        parent=f"/{name}", memory_bytes=memory, pids=pids, version=version, root=root
    )
    try:
        if version == 2:
            enabled = (root / "cgroup.subtree_control").read_text().split()
            if not {"pids", "memory"} <= set(enabled):
                raise OSError(errno.ENOTSUP, f"pids and memory are not enabled in {root}")
            _make(cgroup, root / name)
            (root / name / "pids.max").write_text(str(pids))
            (root / name / "memory.max").write_text(str(memory))
            _write_if_present(root / name / "memory.swap.max", "0")
        else:
            _make(cgroup, root / "pids" / name)
            (root / "pids" / name / "pids.max").write_text(str(pids))
            _make(cgroup, root / "memory" / name)
            (root / "memory" / name / "memory.limit_in_bytes").write_text(str(memory))
            _write_if_present(root / "memory" / name / "memory.memsw.limit_in_bytes", str(memory))
    except OSError as error:
        cgroup.remove(wait_s=0)
        return BuildCgroup(parent=None, memory_bytes=memory, pids=pids, version=version, note=(
            f"no process limit for image builds: the harness cannot create a cgroup under {root} "
            f"({error.strerror or error}); run it as root on the engine's host"
        ))  # fmt: skip
    return cgroup


def leftover_cgroups(owner: str = "", root: Path = CGROUP_ROOT) -> list[Path]:
    """Build parents left on this host (by `owner`, or by any run), in any hierarchy."""
    places = [root, *_hierarchies(root)]
    pattern = f"{PREFIX}{owner}*"
    return [path for place in places for path in place.glob(pattern) if path.is_dir()]


def remove_cgroups_of(owner: str, root: Path = CGROUP_ROOT) -> int:
    """Remove the build parents a run (`owner`) left, e.g. when it was killed mid-build; how
    many could not be removed (a step container still in one)."""
    left = 0
    for path in sorted(leftover_cgroups(owner, root), key=lambda p: len(p.parts), reverse=True):
        left += not _remove_tree(path)
    return left


def _make(cgroup: BuildCgroup, path: Path) -> None:
    path.mkdir()
    cgroup._created.append(path)


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        with contextlib.suppress(OSError):  # e.g. no swap accounting in this kernel
            path.write_text(value)


def _hierarchies(root: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [path for path in root.iterdir() if path.is_dir() and not path.is_symlink()]
    return []


def _remove_tree(path: Path) -> bool:
    """rmdir a cgroup and the (empty) cgroups under it, deepest first; True when it is gone."""
    with contextlib.suppress(OSError):
        for child in sorted(path.iterdir(), reverse=True):
            if child.is_dir():
                _remove_tree(child)
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _kill_all(path: Path) -> None:
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.5)


def _number(path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return 0

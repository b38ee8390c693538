"""Limits for submissions graded at the same time on one engine's host.

Several workers grade at once; each gets a profile cut so that together they fit the host, and a
number of compute threads that does not oversubscribe its cores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from grader.domain.rubric import Profile

LEFT_TO_THE_HOST = 0.2  # of the engine's memory, for everything but the graded containers
LEAST_MEMORY_MB = 512  # a container's memory however many workers share the host


def share_host(profile: Profile, engine_info: dict[str, object], workers: int) -> Profile:
    """The profile with limits that let `workers` submissions run at once on the engine's host.

    Memory is cut so that all of them fit (a fifth of it is left to everything else): too much
    would end in the kernel's OOM killer. CPU is shared by the kernel's equal weights instead
    of hard quotas: each container keeps the profile's ceiling (at most the host's cores), gets
    at least its fair share when all are busy, and idle cores when others wait on image builds
    or server start-ups. Its compute threads are cut to the fair share (`threads_per_container`).
    """
    cores = _engine_number(engine_info, "NCPU", 1)
    memory_mb = int(_engine_number(engine_info, "MemTotal", 0)) // (1 << 20)
    limits = replace(profile.limits, cpus=min(profile.limits.cpus, cores))
    if workers > 1:
        share_mb = int(memory_mb * (1 - LEFT_TO_THE_HOST) / workers)
        limits = replace(limits, memory_mb=min(limits.memory_mb, max(LEAST_MEMORY_MB, share_mb)))
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
    cores = _engine_number(engine_info, "NCPU", 1)
    return max(1, min(math.ceil(profile.limits.cpus), int(cores // workers)))


def _engine_number(engine_info: Mapping[str, object], key: str, default: float) -> float:
    """A number `docker info` gives, or `default` when it gives none (or 0)."""
    value = engine_info.get(key)
    return float(value) if isinstance(value, int | float | str) and value else default

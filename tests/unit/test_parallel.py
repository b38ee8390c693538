from __future__ import annotations

from grader.domain.rubric import load_rubric
from grader.engine.containers import ResourceLimits
from grader.pytest_plugin.parallel import submission_of_nodeid
from grader.stages.sharing import share_host, threads_per_container


def test_the_submission_is_the_scheduling_scope():
    nodeid = "grader/pytest_plugin/checks/test_train.py::test_build[2023010001]"
    assert submission_of_nodeid(nodeid) == "2023010001"
    assert submission_of_nodeid("test_serve.py::test_ping[bob [x] (copy)]") == "bob [x] (copy)"
    assert submission_of_nodeid("test_serve.py::test_ping") is None


def test_limits_are_cut_so_that_workers_fit_the_host():
    offline = load_rubric().profile("offline")  # 2 CPUs, 4096 MB per container
    host = {"NCPU": 2, "MemTotal": 24 * (1 << 30)}
    alone = share_host(offline, host, 1)
    assert (alone.limits.cpus, alone.limits.memory_mb) == (2, 4096)
    assert threads_per_container(offline, host, 1) is None
    two = share_host(offline, host, 2)
    assert (two.limits.cpus, two.limits.memory_mb) == (2, 4096)
    assert threads_per_container(offline, host, 2) == 1
    small_host = {"NCPU": 2, "MemTotal": 8 * (1 << 30)}
    eight = share_host(offline, small_host, 8)
    assert (eight.limits.cpus, eight.limits.memory_mb) == (2, 819)
    assert threads_per_container(offline, small_host, 8) == 1
    assert eight.limits.train_seconds == offline.limits.train_seconds
    big_host = {"NCPU": 64, "MemTotal": 256 * (1 << 30)}
    assert threads_per_container(offline, big_host, 8) == 2  # the profile's ceiling holds
    one_core = share_host(offline, {"NCPU": 1, "MemTotal": 8 * (1 << 30)}, 1)
    assert one_core.limits.cpus == 1  # never more than the host has


def test_containers_get_the_threads_of_their_share():
    assert ResourceLimits(cpus=1.5, memory_mb=512, pids=64, wall_seconds=1).compute_threads == 2
    shared = ResourceLimits(cpus=2, memory_mb=512, pids=64, wall_seconds=1, threads=1)
    assert shared.compute_threads == 1

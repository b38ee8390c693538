from __future__ import annotations

from grader.grading import share_host
from grader.parallel import submission_of_nodeid
from grader.rubric import load_rubric


def test_the_submission_is_the_scheduling_scope():
    assert submission_of_nodeid("grader/checks/test_train.py::test_build[2023010001]") == (
        "2023010001"
    )
    assert submission_of_nodeid("test_serve.py::test_ping[bob [x] (copy)]") == "bob [x] (copy)"
    assert submission_of_nodeid("test_serve.py::test_ping") is None


def test_limits_are_cut_so_that_workers_fit_the_host():
    offline = load_rubric().profile("offline")  # 2 CPUs, 4096 MB per container
    host = {"NCPU": 2, "MemTotal": 24 * (1 << 30)}
    assert share_host(offline, host, 1) is offline
    two = share_host(offline, host, 2)
    assert (two.limits.cpus, two.limits.memory_mb) == (1.0, 4096)
    eight = share_host(offline, {"NCPU": 2, "MemTotal": 8 * (1 << 30)}, 8)
    assert (eight.limits.cpus, eight.limits.memory_mb) == (0.5, 819)
    assert eight.limits.train_seconds == offline.limits.train_seconds


def test_progress_lines():
    from types import SimpleNamespace

    from grader.progress import Progress
    from grader.results import CheckResult, SubmissionResult

    lines = []
    progress = Progress(lines.append)
    progress.total = 2
    gateway = SimpleNamespace(id="gw1")
    report = SimpleNamespace(
        nodeid="test_train.py::test_build[alice]", node=SimpleNamespace(gateway=gateway)
    )
    progress.seen(report)
    progress.seen(report)  # once per submission
    result = SubmissionResult("alice", "/a", "/r/a")
    result.checks["train.build"] = CheckResult("train.build", "Builds", "passed", 10, 10)
    progress.finished(result)
    assert lines[0] == "grading alice on gw1"
    assert lines[1].startswith("[1/2] alice: 10/10 in 0 s (0 s elapsed, about 0 s left")
    assert len(lines) == 2

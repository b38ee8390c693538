"""Whether a grading run is alive, dead or unknown, as another run on the same host sees it:
real locks held by real processes, each with a GRADER_HOME of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grader.domain.settings import Settings
from grader.engine.runs import RunLock, images_in_use, is_alive, keep_images_of, run_state

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from grader.engine.runs import RunLock
    from grader.domain.settings import Settings
    lock = RunLock(Settings(Path(sys.argv[1]), None, 1), sys.argv[2])
    if len(sys.argv) > 3:
        lock.record_images(sys.argv[3].split(","))
    print("locked", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "locks"
    monkeypatch.setenv("GRADER_RUN_LOCKS", str(folder))
    return folder


@pytest.fixture
def run_elsewhere(tmp_path: Path, locks: Path):
    """Start a run holding its lock in another process, under a GRADER_HOME of its own."""
    processes = []

    def start(run_id: str, images: list[str] | None = None) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", HOLDER, str(tmp_path / "other-home"), run_id]
        process = subprocess.Popen(
            command + ([",".join(images)] if images is not None else []),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def mine(tmp_path: Path) -> Settings:
    return Settings(tmp_path / "my-home", None, 1)


def test_a_run_under_another_home_is_alive_until_killed_then_dead(tmp_path, run_elsewhere):
    other = run_elsewhere("20260101-000000-aaaaaa")
    assert run_state(mine(tmp_path), "20260101-000000-aaaaaa") == "alive"
    assert is_alive(mine(tmp_path), "20260101-000000-aaaaaa")
    other.kill()
    other.wait()
    assert run_state(mine(tmp_path), "20260101-000000-aaaaaa") == "dead"


def test_a_run_with_no_lock_anywhere_is_unknown_not_dead(tmp_path, locks):
    assert run_state(mine(tmp_path), "test-made-by-hand") == "unknown"


def test_a_run_that_ended_keeping_its_images_is_dead(tmp_path, locks):
    keep_images_of(mine(tmp_path), "20260101-000000-bbbbbb")
    assert run_state(mine(tmp_path), "20260101-000000-bbbbbb") == "dead"


def test_an_ended_run_leaves_a_free_lock(tmp_path, locks):
    lock = RunLock(mine(tmp_path), "20260101-000000-cccccc")
    assert run_state(Settings(tmp_path / "third", None, 1), "20260101-000000-cccccc") == "alive"
    lock.release()
    assert run_state(Settings(tmp_path / "third", None, 1), "20260101-000000-cccccc") == "dead"


def test_base_images_in_use_are_those_live_runs_said(tmp_path, run_elsewhere):
    silent = run_elsewhere("20260101-000000-dddddd")
    assert images_in_use(mine(tmp_path)) is None  # it may use any of them until it says
    silent.kill()
    silent.wait()
    run_elsewhere("20260101-000000-eeeeee", ["alpine:latest", "pytorch/pytorch:1.13.1"])
    ended = run_elsewhere("20260101-000000-ffffff", ["ubuntu:22.04"])
    ended.kill()
    ended.wait()
    assert images_in_use(mine(tmp_path)) == {"alpine:latest", "pytorch/pytorch:1.13.1"}


def test_no_writable_lock_folder_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GRADER_RUN_LOCKS", str(tmp_path / "a-file" / "locks"))
    with pytest.raises(OSError) as error:
        RunLock(mine(tmp_path), "20260101-000000-gggggg")
    assert str(error.value) == (
        f"no folder for run locks can be written: {tmp_path}/a-file/locks; set GRADER_RUN_LOCKS "
        "to a folder every grading run on this host can write"
    )

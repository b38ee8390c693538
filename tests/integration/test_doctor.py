"""`grader doctor` on this machine, and with the engine or the dataset missing."""

from __future__ import annotations

import pytest

from grader.engine.daemon import connect
from grader.engine.standins import ALPINE_IMAGE, standin_of
from tests.cli import run_grader

pytestmark = pytest.mark.integration


def _lines(stdout: str) -> dict[str, str]:
    """Item -> its first line, e.g. 'engine' -> '[ ok ] engine  Docker ...'."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "]" in line:
            item = line.split("]", 1)[1].split("  ")[0].strip()
            found.setdefault(item, line)
    return found


def test_a_set_up_machine_can_grade():
    client = connect()
    # The alpine stand-in is built when missing (a genuine alpine image is left alone).
    alpine = client.images.get("alpine:latest") if client.images.list("alpine") else None
    if alpine is not None and standin_of(alpine) is not None:
        client.images.remove("alpine:latest")
        client.images.remove(ALPINE_IMAGE)
    done = run_grader("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = _lines(done.stdout)
    assert lines["engine"].startswith("[ ok ] engine")
    assert "storage driver overlay2" in lines["engine"]
    assert lines["disk"].startswith("[ ok ] disk")
    if "nvidia" in (client.info().get("Runtimes") or {}):
        assert lines["gpu"].startswith("[ ok ] gpu")
        assert "visible inside a container" in lines["gpu"]
    else:
        assert lines["gpu"].startswith("[info] gpu                 no NVIDIA runtime in the engine")
    assert lines["base images"].startswith("[ ok ] base images")
    assert lines["dataset"].startswith("[ ok ] dataset")
    assert "checksums valid" in lines["dataset"]
    assert lines["alpine run"].startswith("[ ok ] alpine run")
    assert lines["alpine interactive"].endswith("typed `ls /`, `tty` (/dev/pts/0) and `exit`")
    assert done.stdout.splitlines()[-1] == "grader doctor: this machine can grade"


def test_a_missing_engine_fails_with_a_fix(tmp_path):
    socket = f"unix://{tmp_path}/no-engine.sock"
    done = run_grader("doctor", env={"DOCKER_HOST": socket})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == f"[FAIL] engine              no Docker engine answers at {socket}"
    assert lines[1].split("fix: ")[1] == (
        "run `grader setup` (as root on Debian it installs and starts dockerd), or start Docker "
        "and check DOCKER_HOST"
    )
    items = _lines(done.stdout)
    for item in ("gpu", "base images", "alpine run", "alpine interactive"):
        assert items[item].split() == ["[skip]", *item.split(), "needs", "the", "Docker", "engine"]
    assert lines[-1] == "grader doctor: 1 problem to fix before grading here"


def test_a_missing_dataset_fails_with_a_fix(tmp_path):
    done = run_grader("doctor", env={"GRADER_HOME": str(tmp_path)})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("[FAIL] dataset"))
    assert "no prepared dataset here (dataset.json missing)" in lines[index]
    assert lines[index + 1].split("fix: ")[1] == (
        "run `grader setup --profile offline` (or `grader data --profile offline --mnist-dir "
        "DIR` with a full MNIST copy)"
    )

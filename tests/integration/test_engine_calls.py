"""Calls into the Docker engine that go past docker-py's public API: reading a command's output
inside a running container, and asking for the size of its writable layer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import docker
import docker.models.containers
import pytest

from grader.engine.containers import writable_layer_bytes
from grader.engine.diagnosis import ContainerInspector
from grader.engine.integrity import Unreadable, copy_out
from grader.engine.standins import ALPINE_IMAGE

pytestmark = pytest.mark.integration

LABEL = "lab5-grader.test-engine-calls"


@pytest.fixture(scope="module")
def container() -> Iterator[docker.models.containers.Container]:
    client = docker.from_env()
    started = client.containers.run(
        ALPINE_IMAGE,
        ["sleep", "120"],
        detach=True,
        network_mode="none",
        labels={LABEL: uuid.uuid4().hex},
    )
    try:
        yield started
    finally:
        started.remove(force=True)


def test_a_command_inside_the_container_gives_its_output(container):
    inspector = ContainerInspector(container)
    assert inspector._run("echo inside; echo not-this >&2") == "inside\n"
    assert inspector._run("exit 3") is None
    assert inspector.hung is None


def test_the_writable_layer_grows_by_what_the_container_writes(container):
    before = writable_layer_bytes(container)
    code, _ = container.exec_run(["dd", "if=/dev/zero", "of=/written", "bs=1M", "count=3"])
    assert code == 0
    after = writable_layer_bytes(container)
    assert after - before >= 3 * 1024 * 1024


def test_a_file_is_copied_out_of_the_container_or_the_reason_given(container, tmp_path):
    code, _ = container.exec_run(["sh", "-c", "printf weights > /m.pt && ln -s /m.pt /link.pt"])
    assert code == 0
    copied = copy_out(container, "/m.pt", 1024, tmp_path)
    assert not isinstance(copied, Unreadable) and copied.read_bytes() == b"weights"
    assert copy_out(container, "/absent.pt", 1024, tmp_path) == Unreadable(
        "/absent.pt does not exist in the container"
    )
    assert copy_out(container, "/link.pt", 1024, tmp_path) == Unreadable(
        "/link.pt is a link (to /m.pt), not the archive itself"
    )
    assert copy_out(container, "/m.pt", 3, tmp_path) == Unreadable(
        "/m.pt is 7 bytes, more than the 3 the grader reads"
    )

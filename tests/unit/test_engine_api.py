from __future__ import annotations

import docker.models.containers
import pytest

from grader.engine.daemon import api_of
from grader.engine.diagnosis import ContainerInspector


def test_a_container_model_without_a_client_is_refused_by_name():
    orphan = docker.models.containers.Container(attrs={"Id": "0123456789abcdef" * 4})
    with pytest.raises(TypeError, match=r"container 0123456789ab was not made by a Docker client"):
        api_of(orphan)


class _Stream:
    """An exec stream with nothing to set a timeout on."""

    closed = False

    def close(self):
        self.closed = True


class _Api:
    def __init__(self, stream):
        self.stream = stream

    def exec_create(self, container, command, stdout, stderr):
        return {"Id": "exec-1"}

    def exec_start(self, exec_id, socket):
        return self.stream


class _Client:
    def __init__(self, stream):
        self.api = _Api(stream)


def test_an_exec_stream_that_cannot_time_out_is_closed_and_refused():
    stream = _Stream()
    container = docker.models.containers.Container(
        attrs={"Id": "0123456789abcdef" * 4}, client=_Client(stream)
    )
    inspector = ContainerInspector(container)
    with pytest.raises(OSError, match=r"^the engine's exec stream _Stream cannot time out$"):
        inspector._exec("true", 1.0)
    assert stream.closed
    assert inspector._run("true") is None  # the look inside gives up: nothing is known

"""The serve.ping verdict: only an HTTP 200 whose JSON body says {"status": "Healthy"} passes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from grader.engine.containers import RunningServer
from grader.stages.serving import Outcome, Server, wait_healthy
from grader.stages.torchserve import TorchServeAPI


class KeepsRunning:
    """What the engine tells of a server container that keeps running (no engine needed: the
    verdict under test is read from HTTP alone)."""

    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {"State": {"Status": "running", "ExitCode": 0}}

    def reload(self) -> None:
        pass

    def logs(self, tail: int = 40) -> bytes:
        return b"model server started\n"


@contextmanager
def answering(status: int, body: bytes) -> Iterator[str]:
    """A server on 127.0.0.1 that answers every GET with `status` and `body`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def ping_outcome(status: int, body: bytes, timeout_s: float = 0.6) -> Outcome:
    with answering(status, body) as url:
        running = RunningServer(KeepsRunning(), {8080: 0})  # the container's view is all it uses
        server = Server(running, TorchServeAPI(url, url, request_timeout_s=1.0))
        return wait_healthy(server, timeout_s)


def test_a_healthy_answer_passes():
    outcome = ping_outcome(200, b'{"status": "Healthy"}')
    assert outcome.ok, outcome.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"status": "Unhealthy"}'),  # TorchServe up, its workers not
        (200, b'{"status": "healthy"}'),
        (200, b'{"state": "Healthy"}'),
        (200, b'["Healthy"]'),
        (200, b"Healthy"),
        (503, b'{"status": "Healthy"}'),
    ],
)
def test_anything_else_fails_naming_what_came_back(status, body):
    outcome = ping_outcome(status, body)
    assert not outcome.ok
    assert body.decode() in outcome.message

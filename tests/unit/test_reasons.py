"""Why a check failed, as data: the codes the serving waits give from what they saw (typed, not
read back from their messages), how a failure carries its reason into the result, and
results.json holding a reason only when there is one."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from grader.domain.reasons import Reason, reason
from grader.domain.results import CheckResult, submission_from_json, submission_to_json
from grader.engine.containers import RunningServer
from grader.pytest_plugin.checking import fail_check, reason_of
from grader.stages.serving import Server, exited_outcome, wait_healthy, wait_model_ready
from grader.stages.torchserve import TorchServeAPI


class Container:
    """What the engine tells of a server container (its state and log); no engine needed."""

    def __init__(self, state: dict[str, Any], log: bytes = b"model server started\n") -> None:
        self.attrs: dict[str, Any] = {"State": state}
        self.log = log

    def reload(self) -> None:
        pass

    def logs(self, tail: int = 40) -> bytes:
        return self.log


RUNNING = {"Status": "running", "ExitCode": 0}


@contextmanager
def answering(routes: dict[str, tuple[int, Any]]) -> Iterator[str]:
    """A server on 127.0.0.1 answering each path of `routes` with (status, JSON body)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, {"code": 404}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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


def _server(url: str, container: Container | None = None) -> Server:
    running = RunningServer(container or Container(RUNNING), {8080: 0})
    return Server(running, TorchServeAPI(url, url, request_timeout_s=1.0))


def test_an_unexpected_answer_until_the_limit_is_not_ready_naming_what_was_seen():
    with answering({"/ping": (503, {"status": "Unhealthy"})}) as url:
        outcome = wait_healthy(_server(url), 0.6)
    assert outcome.reason is not None
    assert outcome.reason.within("serve.ping") == Reason(
        "serve.ping/not-ready", {"seen": 'HTTP 503 \'{"status": "Unhealthy"}\'', "limit_s": 0.6}
    )


def test_a_model_under_another_name_gives_the_names_seen():
    routes = {"/models": (200, {"models": [{"modelName": "minst", "modelUrl": "minst.mar"}]})}
    with answering(routes) as url:
        outcome = wait_model_ready(_server(url), "mnist", 5.0)
    assert not outcome.ok and outcome.reason is not None
    assert outcome.reason.within("serve.model_ready") == Reason(
        "serve.model_ready/wrong-model-name", {"model": "mnist", "seen": "minst"}
    )
    assert "minst" in outcome.message


def test_workers_that_never_become_ready_are_listed():
    routes = {"/models/mnist": (200, [{"workers": [{"status": "UNLOADING"}]}])}
    with answering(routes) as url:
        outcome = wait_model_ready(_server(url), "mnist", 0.6)
    assert outcome.reason == reason(
        "workers-not-ready", model="mnist", workers="UNLOADING", limit_s=0.6
    )


@pytest.mark.parametrize(
    ("state", "log", "expected"),
    [
        ({"Status": "exited", "ExitCode": 0}, b"done\n", reason("exited", exit_code=0)),
        (
            {"Status": "exited", "ExitCode": 137, "OOMKilled": True},
            b"",
            reason("oom-killed", exit_code=137),
        ),
        (
            {"Status": "exited", "ExitCode": 127},
            b"exec /start.sh: no such file or directory\n",
            reason("not-executable", error="exec /start.sh: no such file or directory"),
        ),
    ],
)
def test_a_stopped_server_says_how_it_stopped(state, log, expected):
    server = Server(RunningServer(Container(state, log), {}), None)
    outcome = exited_outcome(server)
    assert outcome is not None and outcome.reason == expected
    assert wait_healthy(server, 1.0).reason == expected


def test_a_failure_carries_its_reason_with_the_checks_id():
    def failing() -> None:
        fail_check("any words at all", reason=reason("timeout", limit_s=900))

    call = pytest.CallInfo.from_call(failing, "call")
    assert reason_of(call, "train.run") == Reason("train.run/timeout", {"limit_s": 900})
    call = pytest.CallInfo.from_call(lambda: fail_check("no reason"), "call")
    assert reason_of(call, "train.run") is None
    # A reason of another check is the harness's slip: the failure is still recorded.
    misplaced = reason("copy-missing", file="x")
    call = pytest.CallInfo.from_call(lambda: fail_check("x", reason=misplaced), "call")
    assert reason_of(call, "train.run") is None


OLD_CHECK = {
    "check_id": "train.run",
    "title": "Training exits 0",
    "status": "failed",
    "points": 0.0,
    "max_points": 10.0,
    "message": "training exited with code 3",
    "log_excerpt": "Traceback",
    "duration_s": 1.5,
    "withheld_by": [],
}
OLD_RESULT = {
    "submission_id": "alice",
    "student_name": None,
    "path": "/x",
    "artifacts": "/y",
    "score": 0.0,
    "max_score": 10.0,
    "notes": [],
    "flags": [],
    "integrity_flags": [],
    "measurements": {},
    "training_curve": {},
    "wrong_digits": [],
    "checks": {"train.run": OLD_CHECK},
}


def test_results_stored_before_reasons_load_and_are_written_again_byte_for_byte():
    stored = json.dumps(OLD_RESULT)
    assert json.dumps(submission_to_json(submission_from_json(json.loads(stored)))) == stored


def test_a_reason_and_its_facts_are_written_only_when_there_is_one():
    result = submission_from_json(json.loads(json.dumps(OLD_RESULT)))
    check = result.checks["train.run"]
    check.failed_for(reason("train.run/exit-code", exit_code="3"))
    written = submission_to_json(result)["checks"]["train.run"]
    assert written == {**OLD_CHECK, "reason": "train.run/exit-code", "facts": {"exit_code": "3"}}
    again = submission_from_json(json.loads(json.dumps(submission_to_json(result))))
    assert (again.checks["train.run"].reason, again.checks["train.run"].facts) == (
        "train.run/exit-code",
        {"exit_code": "3"},
    )
    check.failed_for(None)
    assert submission_to_json(result)["checks"]["train.run"] == OLD_CHECK
    passed = CheckResult("train.build", "t", "passed", 10.0, 10.0)
    assert "reason" not in submission_to_json(result)["checks"]["train.run"]
    assert (passed.reason, passed.facts) == ("", {})


def test_an_answer_that_never_ends_is_an_incomplete_answer():
    class Trickles(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"status": ')
            self.wfile.flush()
            time.sleep(3)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickles)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        outcome = wait_healthy(_server(f"http://127.0.0.1:{httpd.server_address[1]}"), 1.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert outcome.reason == reason("incomplete-answer")

"""Deadlines that hold against servers that answer slowly, partly or never: real sockets on
127.0.0.1, and a real timer thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from grader.domain.errors import RubricError
from grader.domain.rubric import DEFAULT_RUBRIC, load_rubric
from grader.domain.waiting import Deadline, NotReady, Probe, wait_for
from grader.engine.watchdog import Watchdog, check_budget
from grader.stages.serving import PredictionError, predict_digit
from grader.stages.torchserve import (
    AnswerTooLarge,
    DeadlineExceeded,
    TorchServeAPI,
    bounded_request,
)

SLACK_S = 1.5  # scheduling on a busy machine; each server below would hold a call 10 s or more

Behaviour = Callable[[socket.socket], None]


@contextlib.contextmanager
def tcp_server(behaviour: Behaviour) -> Iterator[str]:
    """A server on 127.0.0.1 that runs `behaviour` on every connection; yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    connections: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections.append(connection)
            threading.Thread(target=_quietly, args=(behaviour, connection), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()
        for connection in connections:
            connection.close()


def _quietly(behaviour: Behaviour, connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the client gave up and closed
        behaviour(connection)


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def trickle(text: bytes, every_s: float) -> Behaviour:
    def behaviour(connection: socket.socket) -> None:
        _read_request(connection)
        for byte in text:
            connection.sendall(bytes([byte]))
            time.sleep(every_s)

    return behaviour


def answer(status: str, body: bytes, headers: str = "") -> Behaviour:
    def behaviour(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body
        )

    return behaviour


def silent(connection: socket.socket) -> None:
    _read_request(connection)
    time.sleep(30)


def timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except BaseException as error:  # the test looks at what was raised
        return error, time.monotonic() - started
    return None, time.monotonic() - started


HEALTHY = b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"status": "Healthy"}'


def test_a_status_line_trickled_a_byte_at_a_time_ends_at_the_deadline():
    with tcp_server(trickle(HEALTHY, every_s=0.2)) as url:
        error, took = timed(lambda: bounded_request("GET", f"{url}/ping", timeout_s=1.5))
    assert isinstance(error, DeadlineExceeded)
    assert isinstance(error, requests.Timeout)  # callers that catch requests' errors still do
    assert 1.5 <= took < 1.5 + SLACK_S
    assert 1 <= error.received <= 9  # about one byte per 0.2 s, fewer when the host is busy
    assert str(error) == (
        f"GET /ping got no complete answer within 1.5 s (the server had sent {error.received} "
        "bytes of it)"
    )


def test_a_body_trickled_after_prompt_headers_ends_at_the_deadline():
    body = b"7" * 100

    def behaviour(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for byte in body:
            connection.sendall(bytes([byte]))
            time.sleep(0.1)

    with tcp_server(behaviour) as url:
        error, took = timed(lambda: bounded_request("POST", f"{url}/p", body=b"x", timeout_s=1))
    assert isinstance(error, DeadlineExceeded)
    assert 1 <= took < 1 + SLACK_S
    assert error.received > 38  # the headers and some of the body


def test_a_server_that_never_answers_ends_at_the_deadline():
    with tcp_server(silent) as url:
        error, took = timed(lambda: bounded_request("GET", f"{url}/ping", timeout_s=1))
    assert isinstance(error, DeadlineExceeded)
    assert 1 <= took < 1 + SLACK_S
    assert error.received == 0
    assert str(error) == "GET /ping got no complete answer within 1 s (the server had sent nothing)"


def test_a_server_that_does_not_read_the_request_ends_at_the_deadline():
    def never_reads(connection: socket.socket) -> None:
        time.sleep(30)

    big = b"\0" * (64 << 20)  # more than the socket buffers take: sending blocks
    with tcp_server(never_reads) as url:
        error, took = timed(lambda: bounded_request("POST", f"{url}/p", body=big, timeout_s=1))
    assert isinstance(error, DeadlineExceeded)
    assert 1 <= took < 1 + SLACK_S


def test_a_prompt_answer_is_read_whole():
    headers = "Content-Type: application/json; charset=utf-8\r\n"
    with tcp_server(answer("200 OK", b'{"status": "Healthy"}', headers)) as url:
        response = bounded_request("GET", f"{url}/ping", timeout_s=5, headers={"X-A": "b"})
    assert response.status_code == 200
    assert response.json() == {"status": "Healthy"}
    assert response.text == '{"status": "Healthy"}'
    assert response.headers["content-type"].startswith("application/json")


def test_an_answer_without_length_is_read_to_its_end():
    def until_close(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy")
        connection.close()

    with tcp_server(until_close) as url:
        response = bounded_request("GET", f"{url}/ping", timeout_s=5)
    assert (response.status_code, response.text) == (503, "busy")


def test_an_endless_answer_is_refused_past_the_cap():
    def endless(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        while True:
            connection.sendall(b"7" * 65536)

    with tcp_server(endless) as url:
        error, took = timed(
            lambda: bounded_request("GET", f"{url}/p", timeout_s=10, max_bytes=1 << 20)
        )
    assert isinstance(error, AnswerTooLarge)
    assert str(error) == "GET /p answered with more than 1 MB"
    assert took < 5


def test_nothing_listening_and_garbage_are_connection_errors():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    error, took = timed(lambda: bounded_request("GET", f"http://127.0.0.1:{port}/", timeout_s=5))
    assert type(error) is requests.ConnectionError and took < 1
    assert "ConnectionRefusedError" in str(error)

    def garbage(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(b"SSH-2.0-OpenSSH\r\n")
        connection.close()

    with tcp_server(garbage) as url:
        error, _ = timed(lambda: bounded_request("GET", f"{url}/ping", timeout_s=5))
    assert type(error) is requests.ConnectionError
    assert "BadStatusLine" in str(error)


def test_api_calls_take_the_shorter_of_their_own_limit_and_the_callers():
    with tcp_server(silent) as url:
        api = TorchServeAPI(url, url, request_timeout_s=0.5)
        error, took = timed(lambda: api.ping(timeout_s=20))
        assert isinstance(error, DeadlineExceeded) and error.timeout_s == 0.5
        assert took < 0.5 + SLACK_S
        error, took = timed(lambda: api.describe("mnist", timeout_s=0.3))
        assert isinstance(error, DeadlineExceeded) and error.timeout_s == 0.3


def test_a_trickled_prediction_fails_naming_the_limit():
    with tcp_server(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n7", 0.3)) as url:
        api = TorchServeAPI(url, url, predict_timeout_s=1)
        error, took = timed(lambda: predict_digit(api, "mnist", b"png"))
    assert isinstance(error, PredictionError)
    assert took < 1 + SLACK_S
    message = str(error)
    assert message.startswith("no complete answer from /predictions/mnist within 1 s ")
    assert "(limit predict_timeout_seconds)" in message
    assert "bytes of it and no more" in message


def test_a_prediction_never_answered_fails_naming_the_limit():
    with tcp_server(silent) as url:
        api = TorchServeAPI(url, url, predict_timeout_s=0.5)
        error, _ = timed(lambda: predict_digit(api, "mnist", b"png"))
    assert isinstance(error, PredictionError)
    assert str(error).startswith(
        "no answer from /predictions/mnist within 0.5 s (limit predict_timeout_seconds); "
    )


def test_deadline_counts_down_and_never_below_zero():
    now = [100.0]
    deadline = Deadline(10, clock=lambda: now[0])
    assert deadline.left() == 10 and deadline.left(cap=3) == 3 and not deadline.passed
    now[0] = 107.5
    assert deadline.left() == pytest.approx(2.5)
    now[0] = 120
    assert deadline.left() == 0 and deadline.passed


def test_a_wait_that_runs_out_names_its_limit():
    with pytest.raises(NotReady) as raised:
        wait_for(
            lambda: Probe(seen="HTTP 503"),
            what="GET /ping",
            expected="Healthy",
            timeout_s=0.2,
            limit="server_ready_seconds",
            interval_s=0.05,
        )
    assert str(raised.value) == (
        "GET /ping did not give Healthy within 0.2 s (limit server_ready_seconds); "
        "last seen: HTTP 503"
    )


# --- the watchdog ----------------------------------------------------------------------------


def test_the_budget_is_the_check_limit_or_what_the_submission_has_left():
    assert check_budget(100, 1000, used_s=0) == check_budget(100, 1000, used_s=900)
    budget = check_budget(100, 1000, used_s=0)
    assert (budget.seconds, budget.limit, budget.limit_seconds) == (100, "check_seconds", 100)
    budget = check_budget(100, 1000, used_s=950)
    assert (budget.seconds, budget.limit) == (50, "submission_seconds")
    assert budget.limit_seconds == 1000
    assert check_budget(100, 1000, used_s=1200).seconds == 0


def test_the_watchdog_unblocks_a_call_blocked_past_its_deadline():
    """What the plugin does with containers, done with a socket: stopping the other side
    makes the blocked call return."""
    left, right = socket.socketpair()
    stopped_at: list[float] = []

    def stop() -> None:
        stopped_at.append(time.monotonic())
        right.shutdown(socket.SHUT_RDWR)

    started = time.monotonic()
    with Watchdog(0.5, stop) as watchdog:
        assert left.recv(10) == b""  # blocked until the watchdog stops the other side
    took = time.monotonic() - started
    assert watchdog.fired and watchdog.stop_problem is None
    assert 0.5 <= took < 0.5 + SLACK_S and len(stopped_at) == 1
    left.close()
    right.close()


def test_a_watchdog_disarmed_in_time_never_fires():
    calls: list[int] = []
    watchdog = Watchdog(0.3, lambda: calls.append(1)).start()
    assert watchdog.disarm() is False
    time.sleep(0.5)
    assert calls == [] and not watchdog.fired


def test_a_failing_stop_is_reported_not_lost():
    def stop() -> str | None:
        raise ConnectionError("engine gone")

    watchdog = Watchdog(0.05, stop).start()
    time.sleep(0.3)
    assert watchdog.disarm() is True
    assert watchdog.stop_problem == "ConnectionError: engine gone"
    watchdog = Watchdog(0.05, lambda: "the engine refused").start()
    time.sleep(0.3)
    assert watchdog.disarm() and watchdog.stop_problem == "the engine refused"


# --- the rubric's check_seconds ----------------------------------------------------------------


def _rubric(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_RUBRIC.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "rubric.toml"
    path.write_text(text.replace(old, new))
    return path


def test_check_seconds_below_a_stage_limit_is_refused(tmp_path):
    path = _rubric(tmp_path, "check_seconds = 1200", "check_seconds = 600")
    with pytest.raises(RubricError) as raised:
        load_rubric(path)
    assert str(raised.value) == (
        f"{path}: profiles.offline.limits.check_seconds: must be at least build_seconds (900): "
        "a check may run a whole stage, got 600"
    )
    path = _rubric(tmp_path, "check_seconds = 1200", 'check_seconds = "long"')
    with pytest.raises(RubricError) as raised:
        load_rubric(path)
    assert str(raised.value) == (
        f"{path}: profiles.offline.limits.check_seconds: must be a number at least 1, got 'long'"
    )


def test_check_seconds_defaults_to_the_longest_stage_and_five_minutes(tmp_path):
    path = _rubric(tmp_path, "check_seconds = 2400\n", "")
    full = load_rubric(path).profile("full").limits
    assert (full.build_seconds, full.check_seconds) == (1800, 2100)
    assert load_rubric().profile("offline").limits.check_seconds == 1200


# --- docker exec output ------------------------------------------------------------------------


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_exec_output_keeps_standard_output_only_and_is_capped():
    from grader.engine.diagnosis import EXEC_OUTPUT_BYTES, _stdout_of

    stream = _frame(2, b"warning\n") + _frame(1, b"0: 00000000:1F90") + _frame(1, b" x\n")
    assert _stdout_of(stream) == b"0: 00000000:1F90 x\n"
    assert _stdout_of(stream[:-1]) == b"0: 00000000:1F90 x"  # a frame cut short: what came
    assert len(_stdout_of(_frame(1, b"y" * (EXEC_OUTPUT_BYTES + 10)))) == EXEC_OUTPUT_BYTES


def test_a_hung_exec_is_explained_once_and_not_tried_again():
    from grader.engine.diagnosis import ContainerInspector

    inspector = ContainerInspector(container=None)  # type: ignore[arg-type]
    assert inspector.unavailable == ""
    inspector.hung = ("cat /proc/net/tcp", 7.95)
    assert inspector.unavailable == (
        "the grader could not look inside the container: `docker exec ... /bin/sh -c "
        "'cat /proc/net/tcp'` did not finish within 8 s (is /bin/sh a working shell?)"
    )
    assert inspector.listeners() is None and inspector.processes() is None  # no engine call


def test_a_check_out_of_time_fails_naming_the_limit_unless_the_engine_could_not_stop_it():
    from grader.pytest_plugin.checking import CheckFailure, classify_exception
    from grader.pytest_plugin.deadlines import ContainersNotStopped
    from grader.pytest_plugin.deadlines import ran_out as _ran_out

    watchdog = Watchdog(1, lambda: None)
    with pytest.raises(CheckFailure) as raised:
        _ran_out(watchdog, check_budget(30, 2400, used_s=100))
    assert raised.value.msg.startswith(
        "this check did not finish within 30 s (limit check_seconds) and was stopped, with the "
        "submission's containers; "
    )
    with pytest.raises(CheckFailure) as raised:
        _ran_out(watchdog, check_budget(30, 100, used_s=90))
    assert raised.value.msg.startswith(
        "the submission used up its 100 s (limit submission_seconds) during this check, which "
        "was stopped with the submission's containers; the checks left were not run"
    )
    watchdog.stop_problem = "Cannot connect to the Docker daemon"
    with pytest.raises(ContainersNotStopped) as refused:
        _ran_out(watchdog, check_budget(30, 2400, used_s=0))
    status, message, _ = classify_exception(refused.value)
    assert status == "error"  # the engine's fault, not the student's
    assert message.startswith("infrastructure error: ")
    assert "ran past check_seconds (30 s)" in message
    assert "Cannot connect to the Docker daemon" in message

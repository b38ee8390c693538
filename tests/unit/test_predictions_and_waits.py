from __future__ import annotations

import pytest
import requests

from grader.domain.predictions import PredictionFormatError, parse_prediction
from grader.domain.waiting import NotReady, Probe, wait_for
from grader.engine.diagnosis import Listener, parse_proc_net_tcp
from grader.stages.torchserve import TorchServeAPI, is_token_error, model_names, worker_statuses


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        (b"7", 7),
        (b"[7]", 7),
        (b'"7"', 7),
        (b'{"7": 0.98, "1": 0.01, "2": 0.01}', 7),
        (b'[{"3": 0.2, "8": 0.8}]', 8),
        (b'{"prediction": 4}', 4),
        (b'{"label": "5"}', 5),
        (b"  2\n", 2),
        (b"6.0", 6),
    ],
)
def test_prediction_bodies(body, digit):
    assert parse_prediction(body) == digit


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "it is not JSON"),
        (b"[1, 2]", "expected a digit"),
        (b"12", "expected a digit"),
        (b'{"cat": 0.9}', "expected a digit"),
        (b"true", "expected a digit"),
        (b"[]", "expected a digit"),
        (b'{"7": "high"}', "expected a digit"),
    ],
)
def test_unreadable_bodies_are_quoted(body, reason):
    with pytest.raises(PredictionFormatError) as raised:
        parse_prediction(body)
    assert body.decode() in str(raised.value)
    assert reason in str(raised.value)


def test_long_bodies_are_cut_in_the_message():
    with pytest.raises(PredictionFormatError, match=r"x{200}\.\.\.'"):
        parse_prediction(b"x" * 5000)


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 81742
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 81738
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 0
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A
"""


def test_proc_net_tcp_listeners():
    assert parse_proc_net_tcp(PROC_NET_TCP) == [
        Listener("0.0.0.0", 8081),
        Listener("127.0.0.1", 8080),
    ]
    listeners = parse_proc_net_tcp(PROC_NET_TCP6, ipv6=True)
    assert listeners == [Listener("::", 8082), Listener("::1", 8083)]
    assert [listener.loopback_only for listener in listeners] == [False, True]


def test_management_answers():
    description = [{"modelName": "mnist", "workers": [{"status": "READY"}, {"status": "LOADING"}]}]
    assert worker_statuses(description) == ["READY", "LOADING"]
    assert worker_statuses({"unexpected": True}) == []
    assert model_names({"models": [{"modelName": "digits", "modelUrl": "d.mar"}]}) == ["digits"]
    assert model_names("nonsense") == []


def test_wait_returns_the_value_when_ready():
    answers = iter([Probe(seen="starting"), Probe(seen="loading"), Probe(value=42, done=True)])
    assert wait_for(lambda: next(answers), what="w", expected="e", timeout_s=5, interval_s=0) == 42


def test_a_probe_that_is_done_must_carry_a_value():
    with pytest.raises(ValueError, match="a probe that is done must carry the value the wait"):
        Probe(done=True)
    ready = Probe(done=True, value=0)  # a falsy value still ends the wait
    assert wait_for(lambda: ready, what="w", expected="e", timeout_s=5, interval_s=0) == 0


def test_wait_times_out_with_an_explanation():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    with pytest.raises(NotReady) as raised:
        wait_for(
            lambda: Probe(seen="HTTP 503"),
            what="GET http://127.0.0.1:1/ping",
            expected='{"status": "Healthy"}',
            timeout_s=2,
            interval_s=0.5,
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert str(raised.value) == (
        'GET http://127.0.0.1:1/ping did not give {"status": "Healthy"} within 2 s; '
        "last seen: HTTP 503"
    )
    assert sum(slept) == pytest.approx(2.0)


def test_wait_with_a_real_clock_cannot_hang():
    with pytest.raises(NotReady, match="last seen: nothing"):
        wait_for(lambda: Probe(), what="x", expected="y", timeout_s=0.2, interval_s=0.05)


def response(status, body):
    answer = requests.Response()
    answer.status_code = status
    answer._content = body.encode()
    return answer


def test_token_errors_are_recognised():
    refused = (
        '{"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed. '
        'Token either incorrect, expired, or not provided correctly"}'
    )
    assert is_token_error(response(400, refused))
    assert not is_token_error(response(400, '{"code": 400, "type": "BadRequestException"}'))
    assert not is_token_error(response(200, '{"status": "Healthy"}'))


def test_keys_from_key_file_are_sent_as_bearer_tokens():
    api = TorchServeAPI("http://127.0.0.1:1", "http://127.0.0.1:2")
    api.use_keys(
        {
            "management": {"key": "m-key", "expiration time": "2026-11-23T23:54:21Z"},
            "inference": {"key": "i-key", "expiration time": "2026-11-23T23:54:21Z"},
            "API": {"key": "a-key"},
        }
    )
    assert api._headers(api.inference_key) == {"Authorization": "Bearer i-key"}
    assert api.management_key == "m-key"
    api.use_keys({"unexpected": "layout"})
    assert api.inference_key is None and api._headers(None) == {}


class _Server:
    """A real HTTP server on 127.0.0.1 that answers /predictions with `answer(count)`."""

    def __init__(self, answer):
        import http.server
        import threading

        self.count = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.count += 1
                status, body = answer(outer.count)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _digits(count: int):
    from grader.domain.dataset import Digits

    return Digits(pixels=bytes(784 * count), labels=bytes([7] * count))


def test_a_broken_server_is_not_sent_every_digit():
    from grader.stages.serving import STOP_AFTER_FAILURES, predict_heldout

    server = _Server(lambda count: (500, b"worker died"))
    try:
        api = TorchServeAPI(server.url, server.url)
        result = predict_heldout(api, "mnist", _digits(200), concurrency=4)
    finally:
        server.close()
    assert STOP_AFTER_FAILURES <= server.count < STOP_AFTER_FAILURES + 4  # what was in flight
    assert result.error_count == 200 and result.not_sent == 200 - server.count
    assert result.errors[0] == "/predictions/mnist answered HTTP 500: 'worker died'"
    assert result.errors[-1] == (
        f"stopped after {STOP_AFTER_FAILURES} failed requests in a row; {result.not_sent} digits "
        "were not sent"
    )


def test_scattered_failures_do_not_stop_the_run():
    from grader.stages.serving import predict_heldout

    server = _Server(lambda count: (500, b"busy") if count % 3 == 0 else (200, b"7"))
    try:
        api = TorchServeAPI(server.url, server.url)
        result = predict_heldout(api, "mnist", _digits(60), concurrency=2)
    finally:
        server.close()
    assert server.count == 60 and result.not_sent == 0
    assert result.correct == 40 and result.error_count == 20

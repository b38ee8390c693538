"""The forwarder's TCP relay, run in-process on 127.0.0.1 in front of a local echo server."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from grader.engine.forwarder import RELAY_SOURCE
from grader.engine.relay import Relay, Route


class EchoServer:
    """Echoes every byte back; ends its side when the client ends its own."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def relays():
    started: list[Relay] = []

    def start(target_port: int, **options) -> int:
        relay = Relay("127.0.0.1", "127.0.0.1", [Route(0, target_port)], **options)
        relay.start()
        started.append(relay)
        return relay.ports[target_port]

    yield start
    for relay in started:
        relay.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def receive_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_bytes_go_both_ways_and_a_half_close_is_kept(echo, relays):
    port = relays(echo.port)
    payload = bytes(range(256)) * 8192  # 2 MB: many reads and writes each way
    with connect(port) as sock:
        sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(1)))
        sender.start()
        received = receive_all(sock)  # ends only when the echo ended its side after ours
        sender.join()
    assert received == payload


def test_each_connection_is_relayed_on_its_own(echo, relays):
    port = relays(echo.port)
    first, second = connect(port), connect(port)
    with first, second:
        second.sendall(b"two")
        first.sendall(b"one")
        assert first.recv(16) == b"one"
        assert second.recv(16) == b"two"


def test_a_target_not_listening_closes_the_client_and_is_logged(relays, capsys):
    closed = socket.create_server(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()
    port = relays(free_port)
    # Closed, or reset: either way ended.
    with connect(port) as sock, contextlib.suppress(ConnectionResetError):
        assert sock.recv(16) == b""
    time.sleep(0.2)
    assert f"relay: cannot reach 127.0.0.1:{free_port}:" in capsys.readouterr().out


def test_connections_beyond_the_bound_wait_for_a_free_slot(echo, relays):
    port = relays(echo.port, max_connections=2)
    first, second = connect(port), connect(port)
    for sock in (first, second):
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
    third = connect(port)  # the kernel takes it into the backlog; the relay does not serve it
    third.sendall(b"waiting")
    third.settimeout(0.5)
    with pytest.raises(TimeoutError):
        third.recv(16)
    assert echo.accepted == 2
    first.close()
    third.settimeout(5)
    assert third.recv(16) == b"waiting"
    second.close()
    third.close()


def test_clients_from_denied_networks_are_refused(echo, relays):
    port = relays(echo.port, deny=["127.0.0.0/8"])
    with connect(port) as sock:
        sock.sendall(b"let me through")
        with contextlib.suppress(ConnectionResetError):  # closed, or reset: either way ended
            assert sock.recv(16) == b""
    assert echo.accepted == 0


def test_a_connection_idle_both_ways_is_closed(echo, relays):
    port = relays(echo.port, idle_seconds=0.5)
    with connect(port) as sock:
        sock.sendall(b"hello")
        assert sock.recv(16) == b"hello"
        started = time.monotonic()
        assert sock.recv(16) == b""  # the relay ended it
        assert 0.3 < time.monotonic() - started < 4


def test_the_relay_runs_from_its_source_and_stops_on_sigterm():
    """As in the forwarder container: `python3 -c <source> ...`, stopped by SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-c", RELAY_SOURCE, "--listen", "127.0.0.1", "--ports", "0",
         "--target", "127.0.0.1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("relay ready on 0 -> 127.0.0.1")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()

"""A TCP relay: accepts on some ports and passes each connection to a target's port, both ways.

It runs inside the harness's forwarder container (`python3 -c <this file> ...`), so it uses the
standard library only and no other module of the harness. The serving container sits on an
internal network with no way out; the forwarder is on that network and on a normal bridge whose
ports are published on 127.0.0.1, and this relay joins the two.

Bounded: at most `max_connections` relayed at once (further clients wait in the listen backlog),
and a connection with no traffic either way for `idle_seconds` is closed.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

READY = "relay ready"
CONNECT_TIMEOUT_S = 10.0
CHUNK = 1 << 16
LOGGED_FAILURES = 20  # a server refusing every connection must not flood the log


@dataclass(frozen=True)
class Route:
    listen_port: int  # 0: any free port (see Relay.ports)
    target_port: int


class Relay:
    """Listeners on `listen_host`, one per route, relaying to `target_host`."""

    def __init__(
        self,
        listen_host: str,
        target_host: str,
        routes: Sequence[Route],
        *,
        max_connections: int = 64,
        idle_seconds: float = 600.0,
        deny: Sequence[str] = (),
    ) -> None:
        self.target_host = target_host
        self.idle_seconds = idle_seconds
        self.deny = [ipaddress.ip_network(network, strict=False) for network in deny]
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopped = threading.Event()
        self._failures = 0
        self._lock = threading.Lock()
        self._listeners: list[tuple[socket.socket, Route]] = []
        for route in routes:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((listen_host, route.listen_port))
            listener.listen(128)
            self._listeners.append((listener, route))

    @property
    def ports(self) -> dict[int, int]:
        """Target port -> the port listening for it."""
        return {route.target_port: sock.getsockname()[1] for sock, route in self._listeners}

    def start(self) -> None:
        for listener, route in self._listeners:
            threading.Thread(target=self._accept, args=(listener, route), daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        for listener, _ in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _denied(self, peer: str) -> bool:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(peer)
            return any(address in network for network in self.deny)
        return True

    def _accept(self, listener: socket.socket, route: Route) -> None:
        while not self._stopped.is_set():
            self._slots.acquire()  # a free slot first: others wait in the backlog
            try:
                client, peer = listener.accept()
            except OSError:
                self._slots.release()
                return
            if self._denied(peer[0]):
                client.close()
                self._slots.release()
                continue
            threading.Thread(target=self._serve, args=(client, route), daemon=True).start()

    def _serve(self, client: socket.socket, route: Route) -> None:
        try:
            try:
                upstream = socket.create_connection(
                    (self.target_host, route.target_port), timeout=CONNECT_TIMEOUT_S
                )
            except OSError as error:
                self._log_failure(f"{self.target_host}:{route.target_port}: {error}")
                return  # the client sees its connection closed, as with nothing listening
            with upstream:
                self._pump_both(client, upstream)
        finally:
            client.close()
            self._slots.release()

    def _pump_both(self, client: socket.socket, upstream: socket.socket) -> None:
        last = [time.monotonic()]
        for sock in (client, upstream):
            sock.settimeout(min(self.idle_seconds, 5.0))
        back = threading.Thread(target=self._pump, args=(upstream, client, last), daemon=True)
        back.start()
        self._pump(client, upstream, last)
        back.join()

    def _pump(self, source: socket.socket, sink: socket.socket, last: list[float]) -> None:
        """Copy until `source` ends, then end `sink`'s sending side (a half-close is kept)."""
        while not self._stopped.is_set():
            try:
                data = source.recv(CHUNK)
            except TimeoutError:
                if time.monotonic() - last[0] < self.idle_seconds:
                    continue
                break  # idle both ways
            except OSError:
                break
            if not data:
                break
            last[0] = time.monotonic()
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)

    def _log_failure(self, message: str) -> None:
        with self._lock:
            self._failures += 1
            if self._failures <= LOGGED_FAILURES:
                print(f"relay: cannot reach {message}", flush=True)
            elif self._failures == LOGGED_FAILURES + 1:
                print("relay: further failures are not logged", flush=True)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="relay")
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--target", required=True, help="host name or address to relay to")
    parser.add_argument("--ports", required=True, help="comma-separated ports, the same both ends")
    parser.add_argument("--deny", action="append", default=[], help="a network refused as client")
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--idle-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    ports = [int(port) for port in args.ports.split(",") if port]
    relay = Relay(
        args.listen,
        args.target,
        [Route(port, port) for port in ports],
        max_connections=args.max_connections,
        idle_seconds=args.idle_seconds,
        deny=args.deny,
    )
    done = threading.Event()
    # As the first process of a container it would ignore SIGTERM without a handler.
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    relay.start()
    print(f"{READY} on {','.join(map(str, ports))} -> {args.target}", flush=True)
    done.wait()
    relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Facts from inside a running container, for failure messages a student can act on.

Read with `docker exec`. Images built on minimal bases may have no `ps`, `ss` or `netstat`, so
everything comes from /proc and plain shell; a fact that cannot be read is None. The container is
the student's: its shell may hang or print without end, so every exec has a deadline and a cap
on its output, and after one exec has hung none is tried again in that container.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import docker
import docker.errors
import docker.models.containers
import requests

from grader.engine.daemon import api_of

EXEC_TIMEOUT_S = 10.0
EXEC_OUTPUT_BYTES = 1 << 20

KEY_FILE_SCRIPT = (
    "for f in /proc/[0-9]*/cwd/key_file.json /home/model-server/key_file.json; do "
    '[ -r "$f" ] && cat "$f" && exit 0; done; exit 1'
)
PROCESSES_SCRIPT = (
    'for d in /proc/[0-9]*; do c=$(tr "\\0" " " < "$d/cmdline" 2>/dev/null); '
    '[ -n "$c" ] && echo "${d#/proc/}: $c"; done'
)


@dataclass(frozen=True)
class Listener:
    address: str
    port: int

    @property
    def loopback_only(self) -> bool:
        return self.address.startswith("127.") or self.address in {"::1", "::ffff:127.0.0.1"}


def parse_proc_net_tcp(text: str, ipv6: bool = False) -> list[Listener]:
    """Listening sockets from /proc/net/tcp or /proc/net/tcp6."""
    listeners = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
            continue
        address_hex, port_hex = fields[1].split(":")
        raw = bytes.fromhex(address_hex)
        if ipv6:
            # Four 32-bit words, each in host (little-endian) order.
            raw = b"".join(struct.pack("<I", w) for w in struct.unpack(">4I", raw))
            address = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            address = socket.inet_ntoa(raw[::-1])
        listeners.append(Listener(address, int(port_hex, 16)))
    return listeners


class ExecTimedOut(Exception):
    pass


@runtime_checkable
class _Receiver(Protocol):
    """What an exec's output is read from: a socket, or an ssh channel."""

    def settimeout(self, value: float | None, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def close(self) -> None: ...


class ContainerInspector:
    """In-container facts of one running container."""

    def __init__(self, container: docker.models.containers.Container) -> None:
        self.container = container
        self.hung: tuple[str, float] | None = None  # the first command that ran out of time

    def _run(self, script: str, timeout_s: float | None = None) -> str | None:
        """`sh -c script`'s standard output when it exits 0 within `timeout_s` (at most
        EXEC_TIMEOUT_S, or a sixth of `timeout_s` when more), else None."""
        if self.hung is not None:
            return None
        # A look inside during a long wait may take a sixth of what is left of it: on a loaded
        # host an exec can take longer than EXEC_TIMEOUT_S, and giving up changes the verdict
        # (a token never read, a loopback-bound server not named).
        cap = EXEC_TIMEOUT_S if timeout_s is None else max(EXEC_TIMEOUT_S, timeout_s / 6)
        timeout_s = max(0.1, min(EXEC_TIMEOUT_S if timeout_s is None else timeout_s, cap))
        try:
            code, output = self._exec(script, timeout_s)
        except ExecTimedOut:
            self.hung = (script, timeout_s)
            return None
        except (docker.errors.APIError, requests.RequestException, OSError):
            return None  # the container is gone or has no shell: then we know nothing
        return output.decode("utf-8", "replace") if code == 0 else None

    def _exec(self, script: str, timeout_s: float) -> tuple[int | None, bytes]:
        deadline = time.monotonic() + timeout_s
        api = api_of(self.container)
        created = api.exec_create(self.container.id, ["/bin/sh", "-c", script], stdout=True,
                                  stderr=False)  # fmt: skip
        stream = api.exec_start(created["Id"], socket=True)
        # Over a unix or TCP socket the stream wraps the socket, whose recv() honours a
        # timeout; an ssh transport hands back its channel, which does the same.
        inner = getattr(stream, "_sock", None)
        raw: object = stream if inner is None else inner
        if not isinstance(raw, _Receiver):
            stream.close()
            raise OSError(f"the engine's exec stream {type(raw).__name__} cannot time out")
        data = bytearray()
        try:
            while len(data) < EXEC_OUTPUT_BYTES + 8:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExecTimedOut(script)
                raw.settimeout(left)
                try:
                    chunk = raw.recv(65536)
                except TimeoutError:
                    raise ExecTimedOut(script) from None
                if not chunk:
                    break
                data += chunk
        finally:
            with contextlib.suppress(OSError):
                raw.close()
            with contextlib.suppress(OSError):
                stream.close()
        code = api.exec_inspect(created["Id"]).get("ExitCode")
        return code, _stdout_of(bytes(data))

    @property
    def unavailable(self) -> str:
        """Why nothing was read inside, for a failure message ("" when nothing hung)."""
        if self.hung is None:
            return ""
        script, timeout_s = self.hung
        shown = script if len(script) <= 40 else script[:37] + "..."
        return (
            f"the grader could not look inside the container: `docker exec ... /bin/sh -c "
            f"{shown!r}` did not finish within {round(timeout_s, 1):g} s (is /bin/sh a working "
            "shell?)"
        )

    def listeners(self, timeout_s: float | None = None) -> list[Listener] | None:
        found: list[Listener] = []
        readable = False
        for path, ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
            text = self._run(f"cat {path}", timeout_s)
            if text is not None:
                readable = True
                found.extend(parse_proc_net_tcp(text, ipv6))
        return found if readable else None

    def processes(self, timeout_s: float | None = None) -> list[str] | None:
        text = self._run(PROCESSES_SCRIPT, timeout_s)
        return text.strip().splitlines() if text is not None else None

    def key_file(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """TorchServe's `key_file.json`, written in the server's working directory."""
        text = self._run(KEY_FILE_SCRIPT, timeout_s)
        try:
            keys = json.loads(text) if text else None
        except ValueError:
            return None
        return keys if isinstance(keys, dict) else None

    def model_archives(self, timeout_s: float | None = None) -> list[str] | None:
        text = self._run("find / -xdev -name '*.mar' 2>/dev/null | head -n 20", timeout_s)
        return text.split() if text is not None else None


def _stdout_of(stream: bytes) -> bytes:
    """Standard output from the engine's multiplexed stream: 8-byte headers, then payloads."""
    out = bytearray()
    at = 0
    while at + 8 <= len(stream):
        kind, size = stream[at], int.from_bytes(stream[at + 4 : at + 8], "big")
        if kind == 1:
            out += stream[at + 8 : at + 8 + size]
        at += 8 + size
    return bytes(out[:EXEC_OUTPUT_BYTES])

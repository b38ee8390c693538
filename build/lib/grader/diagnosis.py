"""Facts from inside a running container, for failure messages a student can act on.

Read through testinfra's docker backend. Images built on minimal bases may have no `ps`, `ss` or
`netstat`, so everything comes from /proc and plain shell; a fact that cannot be read is None.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

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


class ContainerInspector:
    """In-container facts of one running container."""

    def __init__(self, container_id: str) -> None:
        # Imported here: importing testinfra while pytest loads plugins defeats its assertion
        # rewriting of testinfra's own plugin.
        import testinfra

        self.host = testinfra.get_host(f"docker://{container_id}")

    def _run(self, script: str) -> str | None:
        try:
            result = self.host.run(script)
        except Exception:  # the container may be gone or have no shell; then we know nothing
            return None
        return result.stdout if result.rc == 0 else None

    def listeners(self) -> list[Listener] | None:
        found: list[Listener] = []
        readable = False
        for path, ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
            text = self._run(f"cat {path}")
            if text is not None:
                readable = True
                found.extend(parse_proc_net_tcp(text, ipv6))
        return found if readable else None

    def processes(self) -> list[str] | None:
        text = self._run(PROCESSES_SCRIPT)
        return text.strip().splitlines() if text is not None else None

    def key_file(self) -> dict[str, Any] | None:
        """TorchServe's `key_file.json`, written in the server's working directory."""
        text = self._run(KEY_FILE_SCRIPT)
        try:
            keys = json.loads(text) if text else None
        except ValueError:
            return None
        return keys if isinstance(keys, dict) else None

    def model_archives(self) -> list[str] | None:
        text = self._run("find / -xdev -name '*.mar' 2>/dev/null | head -n 20")
        return text.split() if text is not None else None

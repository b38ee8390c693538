"""The lab's first step, done for real: run an `alpine` container that lists `/`, then an
interactive shell in one through a pseudo-terminal, as a student types it
(`docker run -it alpine sh`, `ls`, `exit`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import struct
import subprocess
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass

import docker
import docker.errors

ALPINE = "alpine:latest"
# BusyBox and Alpine's sh end their prompt with "# " or "$ ", maybe followed by terminal codes.
PROMPT = re.compile(rb"[#$] (?:\x1b\[[0-9;]*[A-Za-z])*$")
CURSOR_QUERY = b"\x1b[6n"  # ash asks where the cursor is; a terminal answers with its position
ROOT_ENTRIES = {"bin", "etc", "proc", "tmp"}


@dataclass(frozen=True)
class StepResult:
    ok: bool
    detail: str  # what was seen, or what went wrong and how to fix it
    transcript: str = ""


def run_listing(
    client: docker.DockerClient, image: str, labels: Mapping[str, str], timeout_s: float = 60
) -> StepResult:
    """`docker run --rm alpine ls /`: the container runs, prints the root folder, and exits 0."""
    container = client.containers.create(
        image, ["ls", "/"], network_mode="none", labels=dict(labels)
    )
    try:
        container.start()
        status = container.wait(timeout=timeout_s)
        output = container.logs().decode(errors="replace")
    except (docker.errors.APIError, OSError) as error:
        return StepResult(False, f"running `ls /` in {image} failed: {error}")
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    entries = set(output.split())
    if status.get("StatusCode") != 0:
        return StepResult(False, f"`ls /` exited with code {status.get('StatusCode')}", output)
    if not entries >= ROOT_ENTRIES:
        missing = ", ".join(sorted(ROOT_ENTRIES - entries))
        return StepResult(False, f"`ls /` did not list {missing}", output)
    return StepResult(True, f"`ls /` listed {len(entries)} entries", output)


def interactive_session(image: str, labels: Mapping[str, str], timeout_s: float = 60) -> StepResult:
    """`docker run -it --rm alpine sh` in a pseudo-terminal: type `ls /`, `tty` and `exit`."""
    cli = shutil.which("docker")
    if cli is None:
        return StepResult(False, "the docker command-line client is not installed (apt install "
                          "docker.io); the interactive step needs it")  # fmt: skip
    label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        [cli, "run", "-it", "--rm", "--network", "none", *label_args, image, "sh"],
        stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    session = _Session(controller, time.monotonic() + timeout_s)
    try:
        if not session.expect(PROMPT):
            return StepResult(False, "no shell prompt appeared", session.text)
        session.send("ls /\n")
        if not session.expect(PROMPT) or not set(session.text.split()) >= ROOT_ENTRIES:
            return StepResult(False, "`ls /` typed in the shell did not list /", session.text)
        session.send("tty\n")
        if not session.expect(rb"/dev/pts/\d+"):
            return StepResult(False, "the shell has no terminal (`tty` said otherwise)",
                              session.text)  # fmt: skip
        session.send("exit\n")
        code = process.wait(timeout=max(1.0, session.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return StepResult(False, "the container did not end after `exit`", session.text)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        session.drain()
        os.close(controller)
    if code != 0:
        return StepResult(False, f"`docker run -it` ended with code {code}", session.text)
    terminal_name = re.search(r"/dev/pts/\d+", session.text)
    return StepResult(
        True,
        f"typed `ls /`, `tty` ({terminal_name.group(0) if terminal_name else '?'}) and `exit`",
        session.text,
    )


class _Session:
    """Reads a pseudo-terminal until a pattern shows up or the deadline passes."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.output = b""
        self._seen = 0  # where the next expect starts looking

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, pattern: re.Pattern[bytes] | bytes) -> bool:
        regex = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        while True:
            match = regex.search(self.output, self._seen)
            if match:
                self._seen = match.end()
                return True
            if not self._read(self.deadline - time.monotonic()):
                return False

    def drain(self) -> None:
        while self._read(0.2):
            pass

    def _read(self, timeout_s: float) -> bool:
        if timeout_s <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # the terminal closed: the process ended
            return False
        self.output += chunk
        if CURSOR_QUERY in chunk:  # answer as a terminal would, or the line editor waits
            os.write(self.fd, b"\x1b[1;1R")
        return bool(chunk)

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import docker
import docker.errors

ALPINE = "alpine:latest"
# BusyBox and Alpine's sh end their prompt with "# " or "$ ", maybe followed by terminal codes.
PROMPT = re.compile(rb"[#$] (?:\x1b\[[0-9;]*[A-Za-z])*\Z")
CURSOR_QUERY = b"\x1b[6n"  # ash asks where the cursor is; a terminal answers with its position
ROOT_ENTRIES = {"bin", "etc", "proc", "tmp"}


@dataclass(frozen=True, kw_only=True)
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
        return StepResult(ok=False, detail=f"running `ls /` in {image} failed: {error}")
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    entries = set(output.split())
    if status.get("StatusCode") != 0:
        return StepResult(
            ok=False,
            detail=f"`ls /` exited with code {status.get('StatusCode')}",
            transcript=output,
        )
    if not entries >= ROOT_ENTRIES:
        missing = ", ".join(sorted(ROOT_ENTRIES - entries))
        return StepResult(ok=False, detail=f"`ls /` did not list {missing}", transcript=output)
    return StepResult(ok=True, detail=f"`ls /` listed {len(entries)} entries", transcript=output)


def interactive_session(image: str, labels: Mapping[str, str], timeout_s: float = 60) -> StepResult:
    """`docker run -it --rm alpine sh` in a pseudo-terminal: type `ls /`, `tty` and `exit`."""
    cli = shutil.which("docker")
    if cli is None:
        return StepResult(
            ok=False,
            detail="the docker command-line client is not installed (apt install docker.io); "
            "the interactive step needs it",
        )
    label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    return drive_shell(
        [cli, "run", "-it", "--rm", "--network", "none", *label_args, image, "sh"], timeout_s
    )


def drive_shell(command: list[str], timeout_s: float) -> StepResult:
    """Run `command` (a shell) on a pseudo-terminal and type into it as a person would, going by
    what it prints, never by how long things take: wait for its prompt, type `ls /` and read
    until the listing and the next prompt, type `tty` and read until its answer, type `exit` and
    wait for the end. Cursor-position queries are answered whenever they come. Only a deadline
    of `timeout_s` for the whole dialogue ends it early.
    """
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        command, stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True
    )
    os.close(terminal)
    session = _Session(controller, time.monotonic() + timeout_s)
    try:
        if not session.expect(lambda out: PROMPT.search(out) is not None):
            return StepResult(ok=False, detail="no shell prompt appeared", transcript=session.text)
        typed = session.send("ls /\n")
        # A prompt the shell prints again (it redraws its line when the terminal is resized)
        # is not the end of the command: the listing is, followed by the next prompt.
        if not session.expect(lambda out: _lists_root(out[typed:]) and bool(PROMPT.search(out))):
            return StepResult(
                ok=False,
                detail="`ls /` typed in the shell did not list /",
                transcript=session.text,
            )
        typed = session.send("tty\n")
        if not session.expect(lambda out: TERMINAL_NAME.search(out, typed) is not None):
            return StepResult(
                ok=False,
                detail="the shell has no terminal (`tty` said otherwise)",
                transcript=session.text,
            )
        session.send("exit\n")
        session.expect(lambda out: False)  # read on until the terminal closes, or the deadline
        code = process.wait(timeout=max(0.1, session.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return StepResult(
            ok=False, detail="the container did not end after `exit`", transcript=session.text
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        session.drain()
        os.close(controller)
    if code != 0:
        return StepResult(
            ok=False, detail=f"`docker run -it` ended with code {code}", transcript=session.text
        )
    terminal_name = re.search(r"/dev/pts/\d+", session.text)
    return StepResult(
        ok=True,
        detail=f"typed `ls /`, `tty` ({terminal_name.group(0) if terminal_name else '?'}) and "
        "`exit`",
        transcript=session.text,
    )


TERMINAL_NAME = re.compile(rb"/dev/pts/\d+")
ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _lists_root(output: bytes) -> bool:
    words = set(ESCAPE.sub(b" ", output).decode(errors="replace").split())
    return words >= ROOT_ENTRIES


class _Session:
    """Reads a pseudo-terminal until what it printed satisfies a condition, the terminal closes,
    or the deadline passes; answers the shell's cursor-position queries as a terminal would."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.output = b""
        self._answered = 0  # cursor queries answered so far
        self._open = True

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")

    def send(self, text: str) -> int:
        """Type `text`; returns where the shell's answer to it starts in `output`."""
        at = len(self.output)
        os.write(self.fd, text.encode())
        return at

    def expect(self, done: Callable[[bytes], bool]) -> bool:
        while not done(self.output):
            if not self._read(self.deadline - time.monotonic()):
                return False
        return True

    def drain(self) -> None:
        while self._read(0.2):
            pass

    def _read(self, timeout_s: float) -> bool:
        if timeout_s <= 0 or not self._open:
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # the terminal closed: the process ended
            chunk = b""
        if not chunk:
            self._open = False
            return False
        self.output += chunk
        # Counted over everything read, so that a query split across two reads is answered too.
        queries = self.output.count(CURSOR_QUERY)
        while self._answered < queries:
            os.write(self.fd, b"\x1b[1;1R")
            self._answered += 1
        return True

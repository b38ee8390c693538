"""How a run shows its progress: a live board on a terminal, plain lines in a log."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import time

import pytest

from grader.pytest_plugin.progress import TerminalBoard
from tests.cli import ROOT, run_grader

pytestmark = pytest.mark.integration

EXAMPLE = str(ROOT / "submissions" / "broken-build")
ERASE = "\x1b["


def run_on_terminal(*args: str, timeout: float = 600) -> str:
    """Run `grader` with a pseudo-terminal as its output; everything it drew, as text."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "grader", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal is closed once the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_live_board(tmp_path):
    shown = run_on_terminal("grade", EXAMPLE, "-j", "1", "--report-dir", str(tmp_path / "r"))
    assert TerminalBoard.ERASE_ROWS.format(2) in shown  # a worker row and the bar, redrawn
    assert " main  broken-build  train." in shown
    assert "0/1 graded" in shown
    assert "[1/1] broken-build: 5/100" in shown
    last_lines = shown.rstrip().splitlines()[-3:]
    assert not any("graded," in line for line in last_lines)  # the board is gone at the end


def test_a_log_gets_lines_and_no_terminal_codes(tmp_path):
    done = run_grader("grade", EXAMPLE, "-j", "1", "--report-dir", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert ERASE not in done.stdout
    assert "[grader] grading broken-build\n" in done.stdout
    assert "[grader] [1/1] broken-build: 5/100 in " in done.stdout


def test_the_board_can_be_turned_off_on_a_terminal(tmp_path):
    shown = run_on_terminal(
        "grade", EXAMPLE, "-j", "1", "--progress", "lines", "--report-dir", str(tmp_path / "r")
    )
    assert "graded," not in shown
    assert "[grader] [1/1] broken-build: 5/100 in " in shown

"""The interactive lab step's dialogue, against a scripted shell on a real pseudo-terminal that
behaves as BusyBox's ash does under load: a cursor-position query split across writes, its prompt
drawn again before the typed line is read, slow answers."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from grader.stages.labsteps import drive_shell

SHELL = textwrap.dedent(
    r'''
    import os, sys, time, tty
    mode = sys.argv[1]
    tty.setraw(0)
    out = lambda text: (os.write(1, text.encode()), time.sleep(0.01))

    asked = answered = 0

    def ask():
        """The query in two writes, as a loaded host may deliver it."""
        global asked
        out("\x1b[")
        time.sleep(0.2)
        out("6n")
        asked += 1

    def line():
        """A typed line; a terminal's answer to the query (ESC [ row ; col R) is not part of it."""
        global answered
        typed = b""
        while not typed.endswith(b"\n"):
            char = os.read(0, 1)
            if char == b"\x1b":
                while not char.endswith(b"R"):
                    char += os.read(0, 1)
                answered += 1
                continue
            typed += char
            os.write(1, char.replace(b"\n", b"\r\n"))
        return typed.decode().strip()

    if mode == "silent":
        time.sleep(60)
    out("/ # ")
    ask()
    out("\r/ # \x1b[J")  # drawn again, as after a window resize
    while True:
        command = line()
        if command == "ls /":
            time.sleep(1.0)  # a loaded host
            if mode == "empty-root":
                out("lost+found\r\n")
            else:
                out("bin    dev    etc    home   proc   root   sys    tmp    usr\r\n")
        elif command == "tty":
            out("not a tty\r\n" if mode == "no-tty" else os.ttyname(0) + "\r\n")
        elif command == "exit":
            end = time.monotonic() + 5  # an answer on its way still counts
            while answered < asked and time.monotonic() < end:
                if os.read(0, 1) == b"R":
                    answered += 1
            if answered < asked:
                out(f"{asked - answered} cursor queries went unanswered\r\n")
                sys.exit(9)
            if mode == "hangs":
                time.sleep(60)
            sys.exit(3 if mode == "exit-3" else 0)
        out("/ # ")
        ask()
    '''
)


@pytest.fixture
def shell(tmp_path: Path):
    script = tmp_path / "shell.py"
    script.write_text(SHELL)
    return lambda mode: [sys.executable, str(script), mode]


def test_a_split_cursor_query_and_a_redrawn_prompt_do_not_break_the_dialogue(shell):
    started = time.monotonic()
    step = drive_shell(shell("ok"), timeout_s=30)
    assert step.ok, step.transcript
    assert step.detail.startswith("typed `ls /`, `tty` (/dev/pts/")
    assert step.detail.endswith(") and `exit`")
    assert "proc" in step.transcript
    assert time.monotonic() - started < 15  # driven by what it prints, not by the deadline


def test_a_shell_that_prints_nothing_fails_at_the_deadline(shell):
    started = time.monotonic()
    step = drive_shell(shell("silent"), timeout_s=2)
    assert not step.ok
    assert step.detail == "no shell prompt appeared"
    assert time.monotonic() - started < 10


def test_a_listing_without_the_root_folder_fails(shell):
    step = drive_shell(shell("empty-root"), timeout_s=3)
    assert not step.ok
    assert step.detail == "`ls /` typed in the shell did not list /"
    assert "lost+found" in step.transcript


def test_a_shell_without_a_terminal_fails(shell):
    step = drive_shell(shell("no-tty"), timeout_s=3)
    assert not step.ok
    assert step.detail == "the shell has no terminal (`tty` said otherwise)"


def test_a_shell_that_does_not_end_after_exit_fails(shell):
    step = drive_shell(shell("hangs"), timeout_s=4)
    assert not step.ok
    assert step.detail == "the container did not end after `exit`"


def test_a_failing_exit_code_is_reported(shell):
    step = drive_shell(shell("exit-3"), timeout_s=30)
    assert not step.ok
    assert step.detail == "`docker run -it` ended with code 3"

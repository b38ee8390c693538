"""Progress of a grading run: lines for logs, and a live board on a terminal."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import pytest

from grader.domain.checks import check_by_test
from grader.domain.inert import terminal_safe
from grader.domain.results import SubmissionResult
from grader.pytest_plugin.parallel import submission_of_nodeid

BOARD_KEY = pytest.StashKey["TerminalBoard"]()


@dataclass
class Running:
    """A submission being graded: where, which check, since when."""

    worker: str
    check: str
    started: float
    check_started: float


class Progress:
    """What is being graded where, told as lines (start and end of every submission) and, on a
    terminal, as a board redrawn every second: one row per worker and an overall bar with ETA.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.total = 0
        self.done = 0
        self.started_at = time.monotonic()
        self.running: dict[str, Running] = {}

    def check_started(self, nodeid: str) -> None:
        sid = submission_of_nodeid(nodeid)
        if sid is None:
            return
        now = time.monotonic()
        running = self.running.setdefault(sid, Running("", "", now, now))
        running.check, running.check_started = check_of_nodeid(nodeid), now

    def seen(self, report: pytest.TestReport) -> None:
        sid = submission_of_nodeid(report.nodeid)
        if sid is None:
            return
        now = time.monotonic()
        check = check_of_nodeid(report.nodeid)
        running = self.running.setdefault(sid, Running("", check, now, now))
        if running.worker:
            return
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        running.worker = gateway.id if gateway is not None else "main"
        where = f" on {running.worker}" if gateway is not None else ""
        self.say(f"grading {terminal_safe(sid)}{where}")

    def finished(self, result: SubmissionResult) -> None:
        self.done += 1
        now = time.monotonic()
        running = self.running.pop(result.submission_id, None)
        took = now - running.started if running else 0.0
        eta = self.eta(now)
        self.say(
            f"[{self.done}/{self.total}] {terminal_safe(result.submission_id)}: {result.score:g}/"
            f"{result.max_score:g} in {took:.0f} s ({now - self.started_at:.0f} s elapsed"
            + (f", about {eta:.0f} s left)" if eta is not None else ")")
        )

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace so far (submissions finished per second of the run)."""
        remaining = max(0, self.total - self.done)
        if not self.done or not remaining:
            return None
        return (now - self.started_at) / self.done * remaining

    def board(self, width: int) -> list[str]:
        """The live board's rows, each at most `width` characters."""
        now = time.monotonic()
        rows = []
        shown = {sid: terminal_safe(sid) for sid in self.running}
        name_width = min(28, max((len(sid) for sid in shown.values()), default=0))
        for raw_sid, running in sorted(self.running.items(), key=lambda item: item[1].worker):
            sid = shown[raw_sid]
            rows.append(
                f" {running.worker or '…':<5} {sid[:name_width]:<{name_width}}  "
                f"{running.check:<24} {now - running.check_started:4.0f} s"
                f"  (submission {now - running.started:.0f} s)"
            )
        bar_width = 20
        filled = bar_width * self.done // self.total if self.total else bar_width
        eta = self.eta(now)
        rows.append(
            f" [{'#' * filled}{'.' * (bar_width - filled)}] {self.done}/{self.total} graded, "
            f"{now - self.started_at:.0f} s elapsed"
            + (f", about {eta:.0f} s left" if eta is not None else "")
        )
        return [row[:width] for row in rows]


def check_of_nodeid(nodeid: str) -> str:
    """The check a node id runs: `.../test_train.py::test_run[id]` -> `train.run`; a test that
    implements no check shows as its own name."""
    path, _, test = nodeid.partition("::")
    function = test.split("[", 1)[0]
    check = check_by_test(os.path.basename(path).removesuffix(".py"), function)
    return check.id if check is not None else function


class TerminalBoard:
    """A text stream for a terminal that keeps a board of live rows under everything written.

    Installed as `sys.stdout` for a run, so every writer (pytest's reporter, the harness's lines)
    goes through it: before text is written the board is erased, and once the text ends a line
    the board is drawn again below it. A thread redraws it every `interval` seconds so elapsed
    times tick. It writes to a duplicate of the terminal's descriptor, so output capture inside
    the run (which redirects descriptor 1) does not swallow it.
    """

    ERASE_ROWS = "\x1b[{}F\x1b[J"  # to the start of the row n rows up, then clear below

    def __init__(self, terminal: TextIO, interval: float = 1.0) -> None:
        self._terminal = terminal
        self._out = os.fdopen(os.dup(terminal.fileno()), "w", encoding=terminal.encoding)
        self._lock = threading.RLock()
        self._drawn = 0
        self._at_line_start = True
        self._rows: Callable[[int], list[str]] | None = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, args=(interval,), daemon=True)

    # The stream interface writers use.
    encoding = property(lambda self: self._terminal.encoding)
    errors = property(lambda self: self._terminal.errors)

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._out.fileno()

    def write(self, text: str) -> int:
        with self._lock:
            self._erase()
            self._out.write(text)
            if text:
                self._at_line_start = text.endswith("\n")
            self._draw()
            self._out.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._out.flush()

    def pytest_configure(self, config: pytest.Config) -> None:
        """Given to `pytest.main` as a plugin: the grading session finds the board here."""
        config.stash[BOARD_KEY] = self

    # The board.
    def show(self, rows: Callable[[int], list[str]]) -> None:
        """Start showing the rows `rows(width)` returns, redrawn until `close`."""
        with self._lock:
            self._rows = rows
            self._draw()
            self._out.flush()
        if not self._ticker.is_alive():
            self._ticker.start()

    def hide(self) -> None:
        with self._lock:
            self._erase()
            self._rows = None
            self._out.flush()

    def close(self) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self.hide()
        self._out.close()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                self._erase()
                self._draw()
                self._out.flush()

    def _erase(self) -> None:
        if self._drawn:
            self._out.write(self.ERASE_ROWS.format(self._drawn))
            self._drawn = 0

    def _draw(self) -> None:
        # Only under a finished line: drawing in the middle of one would split it.
        if self._rows is None or not self._at_line_start:
            return
        size = shutil.get_terminal_size()
        rows = self._rows(size.columns - 1)  # a full-width row wraps on some terminals
        if len(rows) > size.lines - 2:  # a board taller than the screen could not be erased
            rows = rows[: max(0, size.lines - 3)] + rows[-1:]
        if rows:
            self._out.write("\n".join(rows) + "\n")
            self._drawn = len(rows)

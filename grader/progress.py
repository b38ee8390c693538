"""Progress of a grading run, told in lines."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from grader.parallel import submission_of_nodeid
from grader.results import SubmissionResult


class Progress:
    """One line per submission started and finished, with the count done and an ETA.

    Lines, not a redrawn screen: they read the same on a terminal and in a CI log.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.total = 0
        self.done = 0
        self.started_at = time.monotonic()
        self.running: dict[str, float] = {}

    def seen(self, report: pytest.TestReport) -> None:
        sid = submission_of_nodeid(report.nodeid)
        if sid is None or sid in self.running:
            return
        self.running[sid] = time.monotonic()
        worker = getattr(getattr(report, "node", None), "gateway", None)
        where = f" on {worker.id}" if worker is not None else ""
        self.say(f"grading {sid}{where}")

    def finished(self, result: SubmissionResult) -> None:
        self.done += 1
        now = time.monotonic()
        took = now - self.running.pop(result.submission_id, now)
        elapsed = now - self.started_at
        remaining = max(0, self.total - self.done)
        eta = f", about {elapsed / self.done * remaining:.0f} s left" if remaining else ""
        self.say(
            f"[{self.done}/{self.total}] {result.submission_id}: {result.score:g}/"
            f"{result.max_score:g} in {took:.0f} s ({elapsed:.0f} s elapsed{eta})"
        )

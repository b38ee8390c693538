"""Deadlines that hold even while a check is blocked: a timer that stops what the check waits on.

Waiting on a container, a build or a server happens in calls that may block for as long as the
other side likes. Checking the time between steps cannot end such a call; stopping the
submission's containers can (a blocked engine call or HTTP read then returns at once), and the
check is then failed with the limit it ran out of.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """The time a check may take, and the rubric limit that sets it."""

    seconds: float
    limit: str  # "check_seconds" or "submission_seconds"
    limit_seconds: float


def check_budget(check_seconds: float, submission_seconds: float, used_s: float) -> Budget:
    """What one check may take: its own limit, or what is left of the submission's if less."""
    left = submission_seconds - used_s
    if left < check_seconds:
        return Budget(max(0.0, left), "submission_seconds", submission_seconds)
    return Budget(check_seconds, "check_seconds", check_seconds)


class Watchdog:
    """Calls `stop` once, from a thread of its own, if it is still armed `seconds` from start.

    `stop` returns None when it stopped what it had to, or why it could not (an engine fault).
    """

    def __init__(self, seconds: float, stop: Callable[[], str | None]) -> None:
        self.seconds = seconds
        self._stop = stop
        self._lock = threading.Lock()
        self._armed = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self.fired = False
        self.stop_problem: str | None = None

    def start(self) -> Watchdog:
        self._armed = True
        self._timer.start()
        return self

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self.fired = True
        try:
            self.stop_problem = self._stop()
        except Exception as error:  # the timer thread must not die silently
            self.stop_problem = f"{type(error).__name__}: {error}"

    def disarm(self) -> bool:
        """Stop watching; True when it had already fired (then after its `stop` returned)."""
        with self._lock:
            self._armed = False
        self._timer.cancel()
        if self.fired:
            self._timer.join()  # let `stop` finish before the check's verdict is written
        return self.fired

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.disarm()

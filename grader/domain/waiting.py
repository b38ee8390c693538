"""Polling with a deadline, for readiness waits that must never hang and must explain a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Value = TypeVar("Value", covariant=True)  # a probe only gives its value: Probe[Never] fits any


@dataclass(frozen=True)
class Probe(Generic[Value]):
    """The outcome of one poll: when `done`, the `value` the wait gives; else what was seen."""

    value: Value | None = None
    seen: str = ""
    done: bool = False

    def __post_init__(self) -> None:
        if self.done and self.value is None:
            raise ValueError("a probe that is done must carry the value the wait gives")


class Deadline:
    """A point in time a piece of work must be over by; what is left of it is never negative."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.at = clock() + seconds

    def left(self, cap: float | None = None) -> float:
        remaining = max(0.0, self.at - self._clock())
        return remaining if cap is None else min(cap, remaining)

    @property
    def passed(self) -> bool:
        return self._clock() >= self.at


class NotReady(Exception):
    """A wait that ran out: says what was polled, what was expected and what came back last."""

    def __init__(
        self, what: str, expected: str, seen: str, timeout_s: float, limit: str = ""
    ) -> None:
        self.what = what
        self.expected = expected
        self.seen = seen
        self.timeout_s = timeout_s
        self.limit = limit
        named = f" (limit {limit})" if limit else ""
        super().__init__(
            f"{what} did not give {expected} within {timeout_s:g} s{named}; "
            f"last seen: {seen or 'nothing'}"
        )


def wait_for(
    probe: Callable[[], Probe[T]],
    *,
    what: str,
    expected: str,
    timeout_s: float,
    limit: str = "",
    interval_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `probe` until it reports done or `timeout_s` passes; return its value or raise.

    A probe that can block must bound itself by what is left of the same `timeout_s` (see
    `Deadline`): the time is only looked at between probes. `limit` names the setting.
    """
    deadline = clock() + timeout_s
    seen = ""
    while True:
        outcome = probe()
        if outcome.done and outcome.value is not None:
            return outcome.value
        seen = outcome.seen or seen
        remaining = deadline - clock()
        if remaining <= 0:
            raise NotReady(what, expected, seen, timeout_s, limit)
        sleep(min(interval_s, remaining))

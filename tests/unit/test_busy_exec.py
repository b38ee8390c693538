"""How long a look inside a server container may take: on a loaded host a `docker exec` can be
slow, so during a long wait it gets a share of that wait rather than a fixed few seconds."""

from __future__ import annotations

from grader.engine.diagnosis import EXEC_TIMEOUT_S, ContainerInspector


class Recording(ContainerInspector):
    """Records the time each exec is given instead of running it."""

    def __init__(self) -> None:
        super().__init__(container=None)  # type: ignore[arg-type]
        self.given: list[float] = []

    def _exec(self, script: str, timeout_s: float) -> tuple[int | None, bytes]:
        self.given.append(timeout_s)
        return 0, b""


def test_a_look_during_a_long_wait_gets_a_sixth_of_what_is_left():
    inspector = Recording()
    inspector._run("cat /proc/net/tcp", 180.0)
    assert inspector.given == [30.0]


def test_a_short_wait_or_none_keeps_the_fixed_cap_and_never_exceeds_the_wait():
    inspector = Recording()
    inspector._run("cat /proc/net/tcp", None)
    inspector._run("cat /proc/net/tcp", 30.0)
    inspector._run("cat /proc/net/tcp", 4.0)
    assert inspector.given == [EXEC_TIMEOUT_S, EXEC_TIMEOUT_S, 4.0]

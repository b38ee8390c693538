"""A host saturated by other work, for tests whose verdicts must not depend on it: one bounded
busy loop per core and an image build that keeps a core busy too, all of this test's own."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker

from grader.domain.rubric import DEFAULT_RUBRIC
from grader.engine.containers import RUN_LABEL, remove_labelled
from grader.stages.labsteps import ALPINE

BUSY_LOOP = "while :; do :; done"


def cpu_times() -> tuple[int, int]:
    """(busy, idle) jiffies of the whole host so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, idle


class Load:
    def __init__(self, burners: list[subprocess.Popen[bytes]], build: subprocess.Popen[bytes],
                 build_log: Path) -> None:  # fmt: skip
        self.burners = burners
        self.build = build
        self.build_log = build_log
        self.started = cpu_times()

    def idle_share(self) -> float:
        """The share of CPU time the host spent idle since the load started."""
        busy, idle = (now - then for now, then in zip(cpu_times(), self.started, strict=True))
        return idle / max(1, busy + idle)

    def assert_busy(self) -> None:
        """The load ran all along: burners and build still going, the cores barely idle."""
        assert all(b.poll() is None for b in self.burners), "a busy loop ended early"
        assert self.build.poll() is None, "the build ended early: " + self.build_log.read_text()
        assert self.idle_share() < 0.2, f"the host was idle {self.idle_share():.0%} of the time"


@contextlib.contextmanager
def saturate(client: docker.DockerClient, folder: Path, seconds: int) -> Iterator[Load]:
    """Busy loops (one per core, at least two) and an image build burning CPU, each ending by
    itself after `seconds` at the latest; stopped and removed on leaving."""
    run_id = f"test-busy-{secrets.token_hex(4)}"
    context = folder / "busy-build"
    context.mkdir(parents=True)
    # A step of its own each time (no build cache), busy until stopped or `seconds` pass.
    (context / "Dockerfile").write_text(
        f"FROM {ALPINE}\nRUN echo {run_id} && (timeout {seconds} sh -c '{BUSY_LOOP}' || true)\n"
    )
    log = folder / "busy-build.log"
    with open(log, "wb") as output:
        build = subprocess.Popen(
            ["docker", "build", "--label", f"{RUN_LABEL}={run_id}", "-t",
             f"lab5-grader/test-busy:{run_id}", str(context)],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )  # fmt: skip
    burners = [
        subprocess.Popen(["timeout", str(seconds), "sh", "-c", BUSY_LOOP])
        for _ in range(max(2, os.cpu_count() or 1))
    ]
    try:
        deadline = time.monotonic() + 60
        while b"Running in" not in log.read_bytes():  # the build's busy step has started
            assert build.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield Load(burners, build, log)
    finally:
        for process in [*burners, build]:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            process.wait()
        # The engine cancels a build whose client went away; its image, if any, is ours.
        remove_labelled(client, {RUN_LABEL: run_id})


def rubric_with_fewer_hidden_digits(folder: Path, digits: int = 200) -> Path:
    """The bundled rubric with `digits` hidden digits per run in the offline profile and every
    limit as it is: the waits are the same, only fewer requests are sent."""
    text = DEFAULT_RUBRIC.read_text()
    offline = text.index("[profiles.offline.limits]")
    line = text.index("heldout_digits = ", offline)
    end = text.index("\n", line)
    path = folder / "rubric.toml"
    path.write_text(text[:line] + f"heldout_digits = {digits}" + text[end:])
    return path

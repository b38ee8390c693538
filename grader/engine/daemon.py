"""Finding, installing and starting the Docker engine.

On the hosts this lab is graded on (Debian, root) a missing engine is installed from Debian's
`docker.io` package and `dockerd` is started in the background, logging to a file. Elsewhere the
harness says in one line what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import requests.exceptions

from grader.domain.errors import EngineUnavailable, SetupError
from grader.domain.settings import Settings

Say = Callable[[str], None]

ENGINE_START_TIMEOUT_S = 90.0


@contextlib.contextmanager
def host_lock(settings: Settings, name: str) -> Iterator[None]:
    """Serialise a set-up step across processes on this host (parallel workers, two TAs)."""
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.locks_dir / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def try_connect(timeout_s: float = 120.0) -> docker.DockerClient | None:
    """A client for the engine named by DOCKER_HOST (or the default socket), or None."""
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None
    return client


def api_of(container: docker.models.containers.Container) -> docker.APIClient:
    """The low-level client of the engine `container` lives on."""
    if container.client is None:
        raise TypeError(f"container {container.short_id} was not made by a Docker client")
    return container.client.api


def connect() -> docker.DockerClient:
    """A client for a running engine, or EngineUnavailable saying how to get one."""
    client = try_connect()
    if client is None:
        raise EngineUnavailable(
            "no Docker engine answers at "
            f"{os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}; "
            "run `grader setup` (as root on Debian it installs and starts one) "
            "or start Docker yourself"
        )
    return client


def ensure_engine(settings: Settings, say: Say) -> docker.DockerClient:
    """Use a running engine; as root on Debian, install and start one when none answers."""
    client = try_connect()
    if client is not None:
        return client
    if os.environ.get("DOCKER_HOST"):
        raise EngineUnavailable(
            f"no Docker engine answers at DOCKER_HOST={os.environ['DOCKER_HOST']}; "
            "start it or unset DOCKER_HOST"
        )
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        raise EngineUnavailable(
            "no Docker engine answers at unix:///var/run/docker.sock; start Docker "
            "(e.g. `sudo systemctl start docker`) and make sure this user may use it"
        )
    with host_lock(settings, "engine"):
        client = try_connect()
        if client is not None:
            return client
        if shutil.which("dockerd") is None:
            say("installing Docker engine (apt-get install docker.io)")
            apt_install(["docker.io"], settings)
        return _start_dockerd(settings, say)


def apt_install(packages: list[str], settings: Settings) -> None:
    """Install Debian packages, logging to the set-up log; raise SetupError naming the log."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(log_path, "a") as log:
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", *packages],
        ):
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            if done.returncode != 0:
                raise SetupError(
                    f"`{' '.join(command)}` failed (exit {done.returncode}); see {log_path}"
                )


def _start_dockerd(settings: Settings, say: Say) -> docker.DockerClient:
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "dockerd.log"
    say(f"starting dockerd in the background (log: {log_path})")
    with open(log_path, "ab") as log:
        # A new session keeps dockerd running after this process (and its terminal) ends.
        process = subprocess.Popen(
            ["dockerd"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        client = try_connect(timeout_s=5)
        if client is not None:
            return client
        if process.poll() is not None:
            raise EngineUnavailable(
                f"dockerd exited with code {process.returncode} right after starting: "
                f"{_tail(log_path)} (full log: {log_path})"
            )
        time.sleep(0.5)
    raise EngineUnavailable(
        f"dockerd did not answer within {ENGINE_START_TIMEOUT_S:.0f} s; see {log_path}"
    )


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])

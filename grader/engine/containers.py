"""A small typed layer over the Docker engine: build, run to exit, logs, clean-up.

It knows nothing about pytest or grading. Every container and image it makes carries the labels
given by the caller (run id, submission id, role), so an interrupted run can be cleaned up.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import docker.utils
import requests
import requests.exceptions
import urllib3.exceptions

from grader.engine.buildnet import bridge_of, remove_rules
from grader.engine.cgroups import NO_LIMIT_REACHED, LimitsReached, build_cgroup
from grader.engine.daemon import api_of
from grader.engine.forwarder import ForwarderError, internal_network, start_forwarder

LABEL_PREFIX = "lab5-grader."
RUN_LABEL = f"{LABEL_PREFIX}run"
SUBMISSION_LABEL = f"{LABEL_PREFIX}submission"
ROLE_LABEL = f"{LABEL_PREFIX}role"

# Logs are kept as head and tail: a container printing gigabytes must not fill memory or disk,
# and the end of a log (final accuracy, last error) matters most.
LOG_HEAD_BYTES = 1 << 20
LOG_TAIL_BYTES = 4 << 20
# What the engine itself keeps of a container's output: a container printing gigabytes must not
# fill Docker's disk. Two rotated files of 50 MB; the harness keeps head and tail of what is left.
ENGINE_LOG = docker.types.LogConfig(
    type=docker.types.LogConfig.types.JSON, config={"max-size": "50m", "max-file": "2"}
)


# Docker's default capability set minus NET_RAW, MKNOD, AUDIT_WRITE, SYS_CHROOT and SETFCAP,
# written out so that it does not depend on the engine's defaults. Root inside must keep what a
# plain `docker run` gives it: images that say `USER root` on top of the TorchServe image write
# into folders owned by `model-server` (DAC_OVERRIDE, CHOWN, FOWNER), and `su`/`runuser` switch
# users (SETUID, SETGID). What is left out serves no lab step: raw sockets (ping), device nodes,
# audit records, chroot and file capabilities.
SANDBOX_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
    "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE",
)  # fmt: skip


STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12})$", re.MULTILINE)  # classic builder's step ids


def grader_labels(run_id: str, submission: str, role: str) -> dict[str, str]:
    return {RUN_LABEL: run_id, SUBMISSION_LABEL: submission, ROLE_LABEL: role}


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    tag: str
    ok: bool
    log_path: Path
    duration_s: float
    error: str | None = None  # the builder's last error line, or why the build stopped
    timed_out: bool = False


@dataclass(frozen=True)
class BuildLimits:
    """What an image build's RUN steps may use, all steps together."""

    memory_mb: int
    cpus: float
    pids: int


class _BuildAPIClient(docker.APIClient):
    """docker-py's `build()` passes only some of the build endpoint's parameters (no
    `cgroupparent`, `cpuquota` or `cpuperiod`); these are added to its request."""

    extra_build_params: Mapping[str, str | int] = {}

    # The stubs leave out docker-py's private request helpers (`_post`, `_get`, `_url`, ...).
    def _post(self, url: str, **kwargs: Any) -> requests.Response:
        if url.endswith("/build") and self.extra_build_params:
            kwargs["params"] = {**(kwargs.get("params") or {}), **self.extra_build_params}
        response: requests.Response = super()._post(url, **kwargs)  # type: ignore[misc]
        return response


@dataclass(frozen=True)
class ResourceLimits:
    cpus: float
    memory_mb: int
    pids: int
    wall_seconds: float
    threads: int | None = None  # OMP_NUM_THREADS; None: the CPUs rounded up

    @property
    def compute_threads(self) -> int:
        return self.threads or max(1, math.ceil(self.cpus))


@dataclass(frozen=True, kw_only=True)
class RunResult:
    exit_code: int | None  # None when the container was killed at the time limit
    timed_out: bool
    oom_killed: bool
    log_path: Path
    duration_s: float
    start_error: str | None = None  # why the container could not start at all
    stopped: str | None = None  # why the harness stopped it before it ended (see `guard`)


def build_image(
    client: docker.DockerClient,
    *,
    context: Path,
    dockerfile: Path,
    tag: str,
    labels: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
    buildargs: Mapping[str, str] | None = None,
    max_context_bytes: int | None = None,
    limits: BuildLimits | None = None,
    network_mode: str | None = None,
) -> BuildResult:
    """Build with the classic builder, streaming its output to `log_path` (its first
    LOG_HEAD_BYTES and last LOG_TAIL_BYTES).

    With `limits`, the RUN steps run in a parent cgroup of the harness's own that holds their
    processes and memory (see grader/engine/cgroups.py), with a CPU quota each.

    A build context over `max_context_bytes` is refused before anything is sent. At the time
    limit the connection is shut down, which makes the engine cancel the build and remove its
    intermediate container.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    files, size = context_size(context, dockerfile)
    if max_context_bytes is not None and size > max_context_bytes:
        refused = (
            f"the build context {context.name}/ is {size / 1e6:,.0f} MB, more than the limit of "
            f"{max_context_bytes / 1e6:,.0f} MB; leave datasets, virtualenvs and checkpoints out "
            "(the grader mounts MNIST at /data) or list them in .dockerignore"
        )
        log_path.write_text(
            f"build context: {files:,} files, {size / 1e6:.1f} MB\nERROR: {refused}\n"
        )
        return BuildResult(tag=tag, ok=False, log_path=log_path, duration_s=0.0, error=refused)
    # No client-side timeout (the stubs allow only an int): the watchdog below bounds the build.
    api = _BuildAPIClient(version=client.api.api_version, timeout=None,  # type: ignore[arg-type]
                          **docker.utils.kwargs_from_env())  # fmt: skip
    cgroup = None
    if limits is not None:
        owner = labels.get(RUN_LABEL, "")
        cgroup = build_cgroup(client.info(), limits.memory_mb, limits.pids, owner)
        params: dict[str, str | int] = {"cpuperiod": 100_000,
                                        "cpuquota": int(limits.cpus * 100_000)}  # fmt: skip
        if cgroup.parent is not None:
            params["cgroupparent"] = cgroup.parent
        else:  # memory per step at least
            params["memory"] = params["memswap"] = limits.memory_mb << 20
        api.extra_build_params = params
    connections: list[socket.socket] = []

    def remember_socket(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        connection = getattr(response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            connections.append(sock)

    def cancel() -> None:
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    api.hooks["response"].append(remember_socket)
    watchdog = threading.Timer(timeout_s, cancel)
    started = time.monotonic()
    error: str | None = None
    image_id: str | None = None
    step_images: list[str] = []  # the FROM image, then one per finished step
    with CappedLog(log_path) as log:
        log.write(f"build context: {files:,} file{'s' * (files != 1)}, {size / 1e6:.1f} MB\n")
        if cgroup is not None and cgroup.note:
            log.write(f"[grader] {cgroup.note}\n")
        try:
            watchdog.start()
            stream = api.build(
                path=str(context),
                dockerfile=str(dockerfile.relative_to(context))
                if dockerfile.is_relative_to(context)
                else str(dockerfile),
                tag=tag,
                labels=dict(labels),
                buildargs=dict(buildargs or {}),
                rm=True,
                forcerm=True,
                decode=True,
                network_mode=network_mode,
            )
            for chunk in stream:
                if "stream" in chunk:
                    log.write(chunk["stream"])
                    step_images += STEP_IMAGE.findall(chunk["stream"])
                elif "error" in chunk:
                    error = str(chunk["error"]).strip()
                    log.write(f"ERROR: {error}\n")
                elif "aux" in chunk and isinstance(chunk["aux"], dict):
                    image_id = chunk["aux"].get("ID", image_id)
                elif "status" in chunk:
                    log.write(f"{chunk['status']} {chunk.get('progress', '')}\n")
                log.flush()
        except docker.errors.APIError as api_error:
            error = api_error.explanation or str(api_error)
            log.write(f"ERROR: {error}\n")
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
        ) as stream_error:
            if not watchdog.finished.is_set():
                error = f"the connection to the Docker engine failed: {stream_error}"
                log.write(f"ERROR: {error}\n")
        finally:
            watchdog.cancel()
            api.close()
            reached = cgroup.limits_reached() if cgroup else NO_LIMIT_REACHED
            if cgroup is not None and not cgroup.remove():
                log.write(f"[grader] could not remove the build's cgroup {cgroup.parent}\n")
        duration = time.monotonic() - started
        timed_out = watchdog.finished.is_set() and duration >= timeout_s
        if timed_out:
            error = f"the build did not finish within the limit of {timeout_s:.0f} s"
            log.write(f"\nERROR: {error}; it was cancelled\n")
        if error is not None and limits is not None and (reached.pids or reached.memory):
            reason = _limit_reason(limits, reached)
            error += f"; {reason}"
            log.write(f"ERROR: {reason}\n")
    ok = error is None and image_id is not None
    if error is None and image_id is None:
        error = "the engine reported no image (see the build log)"
    if not ok and len(step_images) > 1 and step_images[-1] != step_images[0]:
        _remove_partial_build(client, step_images[-1])
    return BuildResult(
        tag=tag,
        ok=ok,
        log_path=log_path,
        duration_s=duration,
        error=None if ok else error,
        timed_out=timed_out,
    )


def _limit_reason(limits: BuildLimits, reached: LimitsReached) -> str:
    reasons = []
    if reached.memory:
        reasons.append(f"the build's steps reached the memory limit of {limits.memory_mb} MB "
                       "(a step killed with code 137 was killed for it)")  # fmt: skip
    if reached.pids:
        reasons.append(f"the build's steps reached the limit of {limits.pids} processes "
                       "(no more could be started)")  # fmt: skip
    return "; ".join(reasons)


def context_size(context: Path, dockerfile: Path) -> tuple[int, int]:
    """Files and bytes of a build context as the engine receives it (.dockerignore applied)."""
    ignore = context / ".dockerignore"
    patterns = []
    if ignore.is_file():
        lines = ignore.read_text(encoding="utf-8", errors="replace").splitlines()
        patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    name = str(dockerfile.relative_to(context)) if dockerfile.is_relative_to(context) else None
    files = size = 0
    for relative in docker.utils.exclude_paths(str(context), patterns, dockerfile=name):
        path = context / relative
        if path.is_file() and not path.is_symlink():
            files += 1
            size += path.stat().st_size
    return files, size


def _remove_partial_build(client: docker.DockerClient, last_step: str) -> None:
    """Remove the untagged step images a failed build left (the classic builder keeps them as
    cache, and nothing else would ever remove them). Removing the last one removes its untagged
    parents too; an image another image still builds on is left alone (the engine refuses)."""
    with contextlib.suppress(docker.errors.APIError):
        image = client.images.get(last_step)
        if not image.tags:
            image.remove()


def device_requests(gpus: str) -> list[docker.types.DeviceRequest]:
    """Device requests for `gpus`: "none", "all", or a comma-separated list of GPU ids."""
    if gpus == "none":
        return []
    if gpus == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    ids = [part.strip() for part in gpus.split(",") if part.strip()]
    if not ids:
        raise ValueError(f"GPU selection {gpus!r} is neither none, all nor a list of ids")
    return [docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def run_to_exit(
    client: docker.DockerClient,
    *,
    image: str,
    command: Sequence[str] | None,
    environment: Mapping[str, str],
    mounts: Sequence[docker.types.Mount],
    limits: ResourceLimits,
    labels: Mapping[str, str],
    log_path: Path,
    gpus: str = "none",
    guard: Callable[[docker.models.containers.Container], str | None] | None = None,
    guard_interval_s: float = 2.0,
) -> RunResult:
    """Run a sandboxed container without network until it exits or the wall-time limit kills it.

    `guard` is asked every `guard_interval_s` while it runs; when it gives a reason, the
    container is killed and the reason kept in `RunResult.stopped`. The container is removed
    afterwards; its output is kept (head and tail) in `log_path`.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    container = client.containers.create(
        image,
        command=list(command) if command else None,
        environment={"OMP_NUM_THREADS": str(limits.compute_threads), **environment},
        mounts=list(mounts),
        network_mode="none",
        nano_cpus=int(limits.cpus * 1e9),
        mem_limit=f"{limits.memory_mb}m",
        memswap_limit=f"{limits.memory_mb}m",
        pids_limit=limits.pids,
        shm_size="256m",
        cap_drop=["ALL"],
        cap_add=list(SANDBOX_CAPABILITIES),
        security_opt=["no-new-privileges"],
        labels=dict(labels),
        log_config=ENGINE_LOG,
        device_requests=device_requests(gpus),
    )
    started = time.monotonic()
    timed_out = False
    exit_code: int | None = None
    stopped: list[str] = []
    ended = threading.Event()

    def watch() -> None:
        assert guard is not None
        while not ended.wait(guard_interval_s):
            try:
                reason = guard(container)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                continue  # the engine is busy or the container is gone: ask again
            if reason is not None:
                stopped.append(reason)
                with contextlib.suppress(docker.errors.APIError):
                    container.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        try:
            container.start()
        except docker.errors.APIError as error:  # e.g. the command is not in the image
            reason = (error.explanation or str(error)).strip()
            log_path.write_text(f"[grader] the container could not start: {reason}\n")
            return RunResult(
                exit_code=None,
                timed_out=False,
                oom_killed=False,
                log_path=log_path,
                duration_s=0.0,
                start_error=reason,
            )
        if guard is not None:
            watcher.start()
        try:
            exit_code = int(container.wait(timeout=limits.wall_seconds)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            with contextlib.suppress(docker.errors.APIError):
                container.kill()
            container.wait(timeout=60)
        duration = time.monotonic() - started
        ended.set()
        if watcher.is_alive():
            watcher.join()
        write_capped_log(container.logs(stream=True, stdout=True, stderr=True), log_path)
        if timed_out or stopped:
            with open(log_path, "a") as log:
                if stopped:
                    log.write(f"\n[grader] stopped: {stopped[0]}\n")
                else:
                    log.write(
                        f"\n[grader] killed at the wall-time limit of {limits.wall_seconds:.0f} s\n"
                    )
        container.reload()
        oom_killed = bool(container.attrs["State"].get("OOMKilled"))
    finally:
        ended.set()
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    return RunResult(
        exit_code=exit_code,
        timed_out=timed_out,
        oom_killed=oom_killed,
        log_path=log_path,
        duration_s=duration,
        stopped=stopped[0] if stopped else None,
    )


def writable_layer_bytes(container: docker.models.containers.Container) -> int:
    """What a container has written into its own file system (its writable layer) so far."""
    api = api_of(container)
    # docker-py's inspect_container cannot ask for sizes; the endpoint can. The stubs leave out
    # the private request helpers that reach it.
    url = api._url("/containers/{0}/json", container.id)  # type: ignore[attr-defined]
    response = api._get(url, params={"size": 1})  # type: ignore[attr-defined]
    found = api._result(response, True)  # type: ignore[attr-defined]
    return int(found.get("SizeRw") or 0)


@dataclass
class RunningServer:
    """A detached server container and the host ports (on 127.0.0.1) its ports are reached at,
    through the forwarder that relays them."""

    container: docker.models.containers.Container
    host_ports: dict[int, int]
    forwarder: docker.models.containers.Container | None = None

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{self.host_ports[port]}"

    def state(self) -> dict[str, Any]:
        """The engine's view: Status ("running", "exited", ...), ExitCode, OOMKilled."""
        try:
            self.container.reload()
        except docker.errors.NotFound:
            return {"Status": "removed"}
        return dict(self.container.attrs.get("State", {}))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return self.container.logs(tail=lines).decode("utf-8", "replace")
        except docker.errors.APIError:
            return ""


def start_server(
    client: docker.DockerClient,
    *,
    image: str,
    ports: Sequence[int],
    limits: ResourceLimits,
    labels: Mapping[str, str],
    network: str,
    relay_image: str,
    forwarder_labels: Mapping[str, str],
    gpus: str = "none",
) -> RunningServer:
    """Start a sandboxed server alone on `network` (see `own_network`: no way out), and a
    forwarder (from `relay_image`) that publishes its `ports` on 127.0.0.1 at free host ports.

    Raises ForwarderError when the forwarder cannot start: a fault of the harness, not of the
    server, which is removed again.
    """
    container = client.containers.run(
        image,
        detach=True,
        network=network,
        log_config=ENGINE_LOG,
        environment={"OMP_NUM_THREADS": str(limits.compute_threads)},
        nano_cpus=int(limits.cpus * 1e9),
        mem_limit=f"{limits.memory_mb}m",
        memswap_limit=f"{limits.memory_mb}m",
        pids_limit=limits.pids,
        cap_drop=["ALL"],
        cap_add=list(SANDBOX_CAPABILITIES),
        security_opt=["no-new-privileges"],
        labels=dict(labels),
        device_requests=device_requests(gpus),
    )
    container.reload()
    # By address: the engine's name service does not answer on an internal network. A server
    # that exited at once has none; the forwarder then has nothing to reach, as is right.
    address = (container.attrs["NetworkSettings"]["Networks"].get(network) or {}).get("IPAddress")
    try:
        forwarder = start_forwarder(
            client,
            image=relay_image,
            network=network,
            target=address or container.name or container.short_id,
            ports=ports,
            labels=forwarder_labels,
            log_config=ENGINE_LOG,
        )
    except ForwarderError:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
        raise
    return RunningServer(container, forwarder.host_ports, forwarder.container)


def stop_server(server: RunningServer, log_path: Path) -> None:
    """Keep the server's log (head and tail) and remove the container."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(docker.errors.APIError):
        server.container.stop(timeout=5)
    with contextlib.suppress(docker.errors.APIError):
        write_capped_log(server.container.logs(stream=True, stdout=True, stderr=True), log_path)
    with contextlib.suppress(docker.errors.APIError):
        server.container.remove(force=True)
    if server.forwarder is not None:
        with contextlib.suppress(docker.errors.APIError):
            server.forwarder.remove(force=True)


def write_capped_log(chunks: Iterator[bytes], path: Path) -> None:
    """Write a log, keeping its first LOG_HEAD_BYTES and last LOG_TAIL_BYTES."""
    with CappedLog(path) as log:
        for chunk in chunks:
            log.write(chunk)


class CappedLog:
    """A log file that keeps its first LOG_HEAD_BYTES as they come (so a running stage's log can
    be read) and its last LOG_TAIL_BYTES, written when it is closed; the rest is counted."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115  # closed in close()
        self._head_left = LOG_HEAD_BYTES
        self._tail = bytearray()
        self._dropped = 0

    def write(self, data: bytes | str) -> None:
        chunk = data.encode("utf-8", errors="replace") if isinstance(data, str) else data
        if self._head_left > 0:
            head, chunk = chunk[: self._head_left], chunk[self._head_left :]
            self._file.write(head)
            self._file.flush()
            self._head_left -= len(head)
        self._tail.extend(chunk)
        if len(self._tail) > LOG_TAIL_BYTES:
            excess = len(self._tail) - LOG_TAIL_BYTES
            self._dropped += excess
            del self._tail[:excess]

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._dropped:
            self._file.write(
                f"\n[grader] ... {self._dropped} bytes of output cut here ...\n".encode()
            )
        self._file.write(self._tail)
        self._file.close()

    def __enter__(self) -> CappedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def own_network(client: docker.DockerClient, name: str, labels: Mapping[str, str]) -> str:
    """A network of one submission's server, labelled for clean-up; its name. Internal, with no
    address on the host's side: no way out, no service on the host, no other submission."""
    return internal_network(client, name, labels)


@dataclass(frozen=True)
class ListedImage:
    """An image as the engine lists it: enough to choose what to remove, without inspecting."""

    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    size: int
    created: int  # seconds since the epoch


def list_images(
    client: docker.DockerClient, filters: Mapping[str, str | list[str] | bool]
) -> list[ListedImage]:
    """The images matching `filters`, from one listing. docker-py's `images.list` inspects each
    image after listing, which fails when another run removes one of them in between."""
    listed: list[dict[str, Any]] = client.api.images(filters=dict(filters)) or []
    return [
        ListedImage(
            id=str(entry.get("Id", "")),
            tags=tuple(t for t in entry.get("RepoTags") or () if t != "<none>:<none>"),
            labels=dict(entry.get("Labels") or {}),
            size=int(entry.get("Size") or 0),
            created=int(entry.get("Created") or 0),
        )
        for entry in listed
    ]


def remove_labelled(
    client: docker.DockerClient, labels: Mapping[str, str], images: bool = True
) -> int:
    """Remove every container and network (and image, unless told not to) carrying all of
    `labels`."""
    selector: dict[str, str | list[str] | bool] = {
        "label": [f"{key}={value}" for key, value in labels.items()]
    }
    removed = 0
    for container in client.containers.list(all=True, filters=selector, ignore_removed=True):
        # NotFound or "removal already in progress": either way it is going.
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
            removed += 1
    for network in client.networks.list(filters=selector):
        bridge = bridge_of(network)
        if bridge is not None:  # a build network left by an interrupted build: its rules too
            remove_rules(bridge)
        with contextlib.suppress(docker.errors.APIError):
            network.remove()
            removed += 1
    for image in list_images(client, selector) if images else []:
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(image.id, force=True)
            removed += 1
    return removed


def log_excerpt(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for a failure message."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    return "\n".join(text[-lines:])

"""`grader doctor`: can this machine grade? One finding per item, each failure with its fix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
import docker.errors
import requests

from grader.domain.dataset import load_dataset
from grader.domain.errors import GraderError
from grader.domain.rubric import Profile
from grader.domain.settings import Settings
from grader.engine.baseimages import BaseImageProvider
from grader.engine.containers import RUN_LABEL, device_requests, remove_labelled
from grader.engine.daemon import try_connect
from grader.engine.standins import ALPINE_IMAGE, BASE_IMAGE, TORCHSERVE_IMAGE
from grader.stages.labsteps import ALPINE, interactive_session, run_listing

Status = Literal["ok", "warn", "fail", "info", "skip"]
DISK_FAIL_GB = 5.0
DISK_WARN_GB = 20.0
REGISTRY_TIMEOUT_S = 10
DOCTOR_RUN = "doctor"  # the run label of the doctor's own containers


@dataclass(frozen=True)
class Finding:
    item: str
    status: Status
    detail: str
    fix: str = ""


def examine(settings: Settings, profile: Profile, say: Callable[[str], None]) -> Iterator[Finding]:
    """Every finding, in order, as soon as it is known."""
    client = try_connect(timeout_s=15)
    engine_at = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    needs_engine = "needs the Docker engine"
    if client is None:
        yield Finding(
            "engine", "fail", f"no Docker engine answers at {engine_at}",
            "run `grader setup` (as root on Debian it installs and starts dockerd), or start "
            "Docker and check DOCKER_HOST",
        )  # fmt: skip
    else:
        yield _engine(client)
    yield from _disk(client, settings)
    if client is not None:
        yield _gpu(client)
        yield _base_images(client, settings)
    yield _dataset(settings, profile)
    if client is not None:
        yield from _alpine(client, settings, say)
        return
    for item in ("gpu", "base images", "alpine run", "alpine interactive"):
        yield Finding(item, "skip", needs_engine)


def _engine(client: docker.DockerClient) -> Finding:
    info = client.info()
    version = client.version()
    return Finding(
        "engine", "ok",
        f"Docker {info.get('ServerVersion')} (API {version.get('ApiVersion')}), storage driver "
        f"{info.get('Driver')}, cgroup v{info.get('CgroupVersion', '1')}, {info.get('NCPU')} "
        f"CPUs, {int(info.get('MemTotal') or 0) / (1 << 30):.1f} GiB",
    )  # fmt: skip


def _disk(client: docker.DockerClient | None, settings: Settings) -> Iterator[Finding]:
    places = {"the grader's home": settings.home}
    if client is not None:
        places["Docker's data"] = Path(client.info().get("DockerRootDir") or "/var/lib/docker")
    for what, path in places.items():
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free_gb = shutil.disk_usage(existing).free / 1e9
        detail = f"{free_gb:.1f} GB free for {what} ({path})"
        fix = "free some space (e.g. `docker image prune`, old report folders) or move it"
        if free_gb < DISK_FAIL_GB:
            yield Finding("disk", "fail", detail + f"; grading needs {DISK_FAIL_GB:g} GB", fix)
        elif free_gb < DISK_WARN_GB:
            yield Finding("disk", "warn", detail + f"; a batch wants {DISK_WARN_GB:g} GB", fix)
        else:
            yield Finding("disk", "ok", detail)


def _gpu(client: docker.DockerClient) -> Finding:
    runtimes = client.info().get("Runtimes") or {}
    if "nvidia" not in runtimes:
        return Finding(
            "gpu", "info",
            f"no NVIDIA runtime in the engine (runtimes: {', '.join(sorted(runtimes)) or 'none'}): "
            "containers run on the CPU, which the offline profile is made for",
        )  # fmt: skip
    labels = {RUN_LABEL: DOCTOR_RUN}
    try:
        output = client.containers.run(
            BASE_IMAGE, ["nvidia-smi", "-L"], remove=True, labels=labels,
            device_requests=device_requests("all"),
            environment={"NVIDIA_DRIVER_CAPABILITIES": "utility,compute"},
        )  # fmt: skip
    except (docker.errors.APIError, docker.errors.ContainerError) as error:
        return Finding(
            "gpu", "fail", f"the NVIDIA runtime is installed but a container got no GPU: {error}",
            "check `nvidia-smi` on the host and the NVIDIA Container Toolkit's configuration",
        )  # fmt: skip
    finally:
        remove_labelled(client, labels, images=False)
    gpus = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    return Finding("gpu", "ok", f"{len(gpus)} GPU(s) visible inside a container: {gpus[0]}")


def _base_images(client: docker.DockerClient, settings: Settings) -> Finding:
    api = docker.APIClient(version=client.api.api_version, timeout=REGISTRY_TIMEOUT_S,
                           **docker.utils.kwargs_from_env())  # fmt: skip
    try:
        # The stubs leave inspect_distribution unannotated.
        api.inspect_distribution("library/alpine:latest")  # type: ignore[no-untyped-call]
        return Finding("base images", "ok", "the registry answers: base images can be pulled")
    except (docker.errors.APIError, requests.exceptions.RequestException) as error:
        unreachable = f"the registry does not answer ({_short(error)})"
    finally:
        api.close()
    present, missing = [], []
    for image in (BASE_IMAGE, TORCHSERVE_IMAGE):
        try:
            client.images.get(image)
            present.append(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        return Finding(
            "base images", "fail",
            f"{unreachable}, and the offline stand-ins {', '.join(missing)} are not built",
            "run `grader setup` to build them from Debian packages (about 5 minutes)",
        )  # fmt: skip
    return Finding(
        "base images", "ok", f"{unreachable}; offline stand-ins ready: {', '.join(present)}"
    )


def _dataset(settings: Settings, profile: Profile) -> Finding:
    root = settings.datasets_dir / profile.dataset
    try:
        dataset = load_dataset(root)
    except GraderError as error:
        return Finding(
            "dataset", "fail", str(error),
            f"run `grader setup --profile {profile.name}` (or `grader data --profile "
            f"{profile.name} --mnist-dir DIR` with a full MNIST copy)",
        )  # fmt: skip
    counts = ", ".join(f"{count:,} {part}" for part, count in dataset.counts.items())
    return Finding(
        "dataset",
        "ok",
        f"{profile.dataset}: {counts} digits from {dataset.source}; checksums valid",
    )


def _alpine(
    client: docker.DockerClient, settings: Settings, say: Callable[[str], None]
) -> Iterator[Finding]:
    labels = {RUN_LABEL: DOCTOR_RUN}
    try:
        image = BaseImageProvider(client, settings, say).ensure(ALPINE)
    except GraderError as error:
        fix = f"run `grader setup` (it builds the offline alpine stand-in {ALPINE_IMAGE})"
        yield Finding("alpine run", "fail", str(error), fix)
        yield Finding("alpine interactive", "skip", "needs the alpine image")
        return
    origin = "" if image.origin != "stand-in" else " (offline stand-in)"
    try:
        listing = run_listing(client, ALPINE, labels)
        yield Finding(
            "alpine run", "ok" if listing.ok else "fail", f"{ALPINE}{origin}: {listing.detail}",
            "" if listing.ok else "see the Docker engine's log; `docker run --rm alpine ls /` "
            "should print the root folder",
        )  # fmt: skip
        session = interactive_session(ALPINE, labels)
        yield Finding(
            "alpine interactive", "ok" if session.ok else "fail",
            f"`docker run -it {ALPINE} sh` in a pseudo-terminal: {session.detail}",
            "" if session.ok else "try `docker run -it --rm alpine sh` yourself",
        )  # fmt: skip
    finally:
        remove_labelled(client, labels, images=False)


def _short(error: Exception) -> str:
    text = getattr(error, "explanation", None) or str(error)
    return text.strip().splitlines()[0][:120] if text.strip() else type(error).__name__


MARKS = {"ok": " ok ", "warn": "warn", "fail": "FAIL", "info": "info", "skip": "skip"}


def format_finding(finding: Finding) -> list[str]:
    lines = [f"[{MARKS[finding.status]}] {finding.item:<19} {finding.detail}"]
    if finding.fix:
        lines.append(f"{'':>7}{'':<19} fix: {finding.fix}")
    return lines

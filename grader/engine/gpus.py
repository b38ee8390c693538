"""Which GPUs containers can get, and which of them each worker's containers use."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from grader.engine.containers import ResourceLimits, device_requests, remove_labelled, run_to_exit

SELECTIONS = ("auto", "none", "all")
CUDA_PROBE = "import torch; print(f'cuda={torch.cuda.is_available()}')"


@dataclass(frozen=True)
class GpuDetection:
    """The GPUs a container on this engine can get (their indexes), or why none."""

    ids: tuple[str, ...]
    detail: str


def check_selection(selection: str) -> str:
    """`--gpus` as given, or ValueError saying what is accepted."""
    parts = [part.strip() for part in selection.split(",")]
    if selection in SELECTIONS or (parts and all(part.isdigit() for part in parts)):
        return selection
    raise ValueError(f"--gpus {selection!r}: use auto, none, all or GPU ids such as 0,1")


def detect_gpus(
    client: docker.DockerClient, probe_image: str, labels: Mapping[str, str]
) -> GpuDetection:
    """Ask the engine, then a probe container, which GPUs a container gets."""
    runtimes = client.info().get("Runtimes") or {}
    if "nvidia" not in runtimes:
        return GpuDetection((), f"the engine has no NVIDIA runtime ({', '.join(sorted(runtimes))})")
    try:
        output = client.containers.run(
            probe_image, ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            remove=True, labels=dict(labels), device_requests=device_requests("all"),
            environment={"NVIDIA_DRIVER_CAPABILITIES": "utility"},
        )  # fmt: skip
    except (docker.errors.APIError, docker.errors.ContainerError) as error:
        return GpuDetection((), f"the NVIDIA runtime is there but a probe container got no GPU "
                                f"({str(error).strip().splitlines()[0][:160]})")  # fmt: skip
    finally:
        with contextlib.suppress(docker.errors.APIError):
            remove_labelled(client, labels, images=False)
    ids = tuple(line.strip() for line in output.decode().splitlines() if line.strip().isdigit())
    return GpuDetection(ids, f"{len(ids)} GPU(s) visible in a probe container")


def chosen_gpus(selection: str, detection: GpuDetection) -> tuple[str, ...]:
    """The GPU ids grading may use: `auto` and `all` mean every detected one."""
    if selection == "none":
        return ()
    if selection in ("auto", "all"):
        return detection.ids
    return tuple(part.strip() for part in selection.split(","))


def gpus_for_worker(gpus: tuple[str, ...], worker: int, workers: int) -> str:
    """The device request string of one worker's containers: none, all, or GPU ids.

    One worker gets every chosen GPU. Several workers each get their own GPU while there are
    enough (worker i gets GPU i mod n), so parallel trainings do not share a device.
    """
    if not gpus:
        return "none"
    if workers <= 1:
        return ",".join(gpus)
    return gpus[worker % len(gpus)]


def describe_device(gpus: str) -> str:
    """How results name the device a stage used."""
    return "cpu" if gpus == "none" else f"gpu {gpus}"


def torch_sees_cuda(
    client: docker.DockerClient, image: str, gpus: str, labels: Mapping[str, str], log_path: Path
) -> bool | None:
    """Run `torch.cuda.is_available()` in `image` with `gpus`: True or False, or None when the
    image cannot answer (no python3 or no torch in it)."""
    try:
        run = run_to_exit(
            client, image=image, command=["python3", "-c", CUDA_PROBE], environment={},
            mounts=[], limits=ResourceLimits(cpus=1, memory_mb=2048, pids=256, wall_seconds=120),
            labels=labels, log_path=log_path, gpus=gpus,
        )  # fmt: skip
    except docker.errors.APIError:  # e.g. no python3 in the image
        return None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            remove_labelled(client, labels, images=False)
    words = run.log_path.read_text(errors="replace").split() if run.exit_code == 0 else []
    return {"cuda=True": True, "cuda=False": False}.get(words[-1] if words else "")

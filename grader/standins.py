"""Locally built stand-ins for public base images, for hosts that cannot reach a registry.

A stand-in is built once per host from Debian packages (`debootstrap` plus `docker import`) and
tagged under every public name it stands in for, so that an unchanged student Dockerfile builds.
Every stand-in carries the labels `lab5-grader.standin` (its family) and `lab5-grader.recipe`
(the recipe version), so the report can say a stand-in was used and a changed recipe rebuilds it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from grader.dockerfile import image_name
from grader.engine import apt_install, host_lock
from grader.errors import SetupError
from grader.settings import Settings

Say = Callable[[str], None]

STANDIN_LABEL = "lab5-grader.standin"
RECIPE_LABEL = "lab5-grader.recipe"

RECIPE_VERSION = "1"
SUITE = "bookworm"
# One root filesystem serves the PyTorch family (and later the TorchServe one, which adds
# wheels on top): Debian's torch 1.13 (CPU), torchvision 0.14, Pillow, NumPy and Java 17.
PACKAGES = (
    "python3",
    "python-is-python3",
    "python3-pip",
    "python3-torch",
    "python3-torchvision",
    "python3-pil",
    "python3-numpy",
    "python3-yaml",
    "ca-certificates",
    "openjdk-17-jre-headless",
)
BASE_IMAGE = f"lab5-grader/debian-ml:r{RECIPE_VERSION}"
# The official PyTorch images work in /workspace and have `python` and `pip` on PATH; pip may
# install into the system Python as it does in a conda image.
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
    "WORKDIR /workspace",
    'CMD ["/bin/bash"]',
    f"LABEL {STANDIN_LABEL}=pytorch {RECIPE_LABEL}={RECIPE_VERSION}",
)


@dataclass(frozen=True)
class StandIn:
    """A stand-in image now tagged as `reference`."""

    reference: str
    family: str
    recipe: str
    description: str


def standin_family(reference: str) -> str | None:
    """Which stand-in can replace `reference`, or None when there is none."""
    if image_name(reference).repository == "pytorch/pytorch":
        return "pytorch"
    return None


def standin_of(image: docker.models.images.Image) -> StandIn | None:
    """The stand-in an image is, judged by its labels, or None for a genuine image."""
    labels = image.labels or {}
    if STANDIN_LABEL not in labels:
        return None
    reference = image.tags[0] if image.tags else image.short_id
    return _describe(reference, labels[STANDIN_LABEL], labels.get(RECIPE_LABEL, "?"))


def _describe(reference: str, family: str, recipe: str) -> StandIn:
    return StandIn(
        reference=reference,
        family=family,
        recipe=recipe,
        description=(
            f"the offline stand-in '{family}' (recipe {recipe}): Debian {SUITE} with torch 1.13 "
            "(CPU), torchvision 0.14, Pillow, NumPy"
        ),
    )


def provide_standin(
    client: docker.DockerClient, reference: str, settings: Settings, say: Say
) -> StandIn | None:
    """Tag the stand-in for `reference` under that name, building it first if needed."""
    family = standin_family(reference)
    if family is None:
        return None
    base = ensure_base_image(client, settings, say)
    name = image_name(reference)
    base.tag(name.repository, name.tag)
    return _describe(str(name), family, RECIPE_VERSION)


def ensure_base_image(
    client: docker.DockerClient, settings: Settings, say: Say
) -> docker.models.images.Image:
    """The stand-in root image of the current recipe, built from Debian packages when missing."""
    with host_lock(settings, "standin-base"):
        try:
            return client.images.get(BASE_IMAGE)
        except docker.errors.ImageNotFound:
            pass
        say(f"building the offline base image {BASE_IMAGE} from Debian packages (a few minutes)")
        rootfs = settings.build_dir / "rootfs"
        try:
            _debootstrap(rootfs, settings)
            _import(client, rootfs, settings)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        return client.images.get(BASE_IMAGE)


def debian_mirror() -> str:
    """The Debian mirror to build from: GRADER_DEBIAN_MIRROR, else the host's own apt source."""
    configured = os.environ.get("GRADER_DEBIAN_MIRROR")
    if configured:
        return configured
    for uri in _apt_source_uris():
        if uri.rstrip("/").endswith("/debian"):
            return uri
    raise SetupError(
        "cannot tell which Debian mirror to build the offline base image from: no `.../debian` "
        "source in /etc/apt; set GRADER_DEBIAN_MIRROR=http://<mirror>/debian"
    )


def _apt_source_uris() -> list[str]:
    uris: list[str] = []
    sources = Path("/etc/apt/sources.list")
    if sources.is_file():
        for line in sources.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb":
                uris.append(next(w for w in words[1:] if not w.startswith("[")))
    folder = Path("/etc/apt/sources.list.d")
    for path in sorted(folder.glob("*.sources")) if folder.is_dir() else []:
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                uris.extend(line.split()[1:])
    return uris


def _debootstrap(rootfs: Path, settings: Settings) -> None:
    if shutil.which("debootstrap") is None:
        apt_install(["debootstrap"], settings)
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "debootstrap.log"
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(rootfs),
        debian_mirror(),
    ]
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SetupError(f"debootstrap failed (exit {done.returncode}); see {log_path}")


def _import(client: docker.DockerClient, rootfs: Path, settings: Settings) -> None:
    repository, tag = BASE_IMAGE.rsplit(":", 1)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        client.api.import_image(
            src=tar.stdout, repository=repository, tag=tag, changes=list(IMAGE_CHANGES)
        )
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise SetupError(f"packing {rootfs} for `docker import` failed (tar exit {tar.returncode})")

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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from grader.domain.dockerfile import image_name
from grader.domain.downloads import download_wheels
from grader.domain.errors import SetupError
from grader.domain.settings import Settings
from grader.engine.containers import build_image
from grader.engine.daemon import apt_install, host_lock

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


TORCHSERVE_RECIPE_VERSION = "2"
TORCHSERVE_IMAGE = f"lab5-grader/torchserve:r{TORCHSERVE_RECIPE_VERSION}"
TORCHSERVE_REQUIREMENTS = ["torchserve==0.12.0", "torch-model-archiver==0.12.0"]
# The official image has Captum, which TorchServe's ImageClassifier handler imports.
TORCHSERVE_EXTRAS = ["captum==0.7.0"]
TORCHSERVE_RECIPE = Path(__file__).with_name("standin_torchserve")

ALPINE_RECIPE_VERSION = "1"
ALPINE_IMAGE = f"lab5-grader/alpine:r{ALPINE_RECIPE_VERSION}"
# The lab's first steps only need a shell and the usual tools: Debian's static BusyBox, laid out
# as Alpine's (every applet a link to /bin/busybox).
ALPINE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["/bin/sh"]',
    f"LABEL {STANDIN_LABEL}=alpine {RECIPE_LABEL}={ALPINE_RECIPE_VERSION}",
)

DESCRIPTIONS = {
    "pytorch": f"Debian {SUITE} with torch 1.13 (CPU), torchvision 0.14, Pillow, NumPy",
    "alpine": "Debian's static BusyBox laid out as Alpine (sh, ls and the other applets)",
    "torchserve": "the PyTorch stand-in plus TorchServe 0.12.0, torch-model-archiver, Captum and "
    "Java 17, laid out as the official image",
}


@dataclass(frozen=True)
class StandIn:
    """A stand-in image now tagged as `reference`."""

    reference: str
    family: str
    recipe: str

    @property
    def description(self) -> str:
        detail = DESCRIPTIONS.get(self.family, "")
        return f"the offline stand-in '{self.family}' (recipe {self.recipe}): {detail}"


def standin_family(reference: str) -> str | None:
    """Which stand-in can replace `reference`, or None when there is none."""
    repository = image_name(reference).repository
    return {
        "pytorch/pytorch": "pytorch",
        "pytorch/torchserve": "torchserve",
        "alpine": "alpine",
        "library/alpine": "alpine",
    }.get(repository)


def current_recipe(family: str) -> str:
    return {"torchserve": TORCHSERVE_RECIPE_VERSION, "alpine": ALPINE_RECIPE_VERSION}.get(
        family, RECIPE_VERSION
    )


def standin_of(image: docker.models.images.Image) -> StandIn | None:
    """The stand-in an image is, judged by its labels, or None for a genuine image."""
    labels = image.labels or {}
    if STANDIN_LABEL not in labels:
        return None
    reference = image.tags[0] if image.tags else image.short_id
    return StandIn(reference, labels[STANDIN_LABEL], labels.get(RECIPE_LABEL, "?"))


def provide_standin(
    client: docker.DockerClient, reference: str, settings: Settings, say: Say
) -> StandIn | None:
    """Tag the stand-in for `reference` under that name, building it first if needed."""
    family = standin_family(reference)
    if family is None:
        return None
    if family == "torchserve":
        image = ensure_torchserve_image(client, settings, say)
    elif family == "alpine":
        image = ensure_alpine_image(client, settings, say)
    else:
        image = ensure_base_image(client, settings, say)
    name = image_name(reference)
    image.tag(name.repository, name.tag)
    return StandIn(str(name), family, current_recipe(family))


def ensure_torchserve_image(
    client: docker.DockerClient, settings: Settings, say: Say
) -> docker.models.images.Image:
    """The TorchServe stand-in of the current recipe, built on the base image when missing."""
    ensure_base_image(client, settings, say)
    with host_lock(settings, "standin-torchserve"):
        try:
            return client.images.get(TORCHSERVE_IMAGE)
        except docker.errors.ImageNotFound:
            pass
        say(f"building the offline TorchServe image {TORCHSERVE_IMAGE}")
        wheels = download_wheels(
            TORCHSERVE_REQUIREMENTS, settings.downloads_dir / "torchserve-0.12.0"
        )
        extras = download_wheels(
            TORCHSERVE_EXTRAS, settings.downloads_dir / "torchserve-extras", with_deps=False
        )
        settings.build_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.build_dir) as folder:
            context = Path(folder)
            shutil.copytree(TORCHSERVE_RECIPE, context, dirs_exist_ok=True)
            for source in (wheels, extras):
                shutil.copytree(
                    source, context / "wheels", ignore=shutil.ignore_patterns(".*"),
                    dirs_exist_ok=True,
                )  # fmt: skip
            result = build_image(
                client,
                context=context,
                dockerfile=context / "Dockerfile",
                tag=TORCHSERVE_IMAGE,
                labels={STANDIN_LABEL: "torchserve", RECIPE_LABEL: TORCHSERVE_RECIPE_VERSION},
                log_path=settings.logs_dir / "standin-torchserve.log",
                timeout_s=1800,
                buildargs={"BASE": BASE_IMAGE},
            )
        if not result.ok:
            raise SetupError(
                f"building {TORCHSERVE_IMAGE} failed: {result.error} (log: {result.log_path})"
            )
        return client.images.get(TORCHSERVE_IMAGE)


def ensure_base_image(
    client: docker.DockerClient, settings: Settings, say: Say
) -> docker.models.images.Image:
    """The stand-in root image of the current recipe, built from Debian packages when missing."""
    return _ensure_imported(
        client, settings, say, BASE_IMAGE, IMAGE_CHANGES,
        f"building the offline base image {BASE_IMAGE} from Debian packages (a few minutes)",
        lambda rootfs: _debootstrap(rootfs, settings),
    )  # fmt: skip


def ensure_alpine_image(
    client: docker.DockerClient, settings: Settings, say: Say
) -> docker.models.images.Image:
    """The alpine stand-in: Debian's busybox-static package unpacked into an empty image."""
    return _ensure_imported(
        client, settings, say, ALPINE_IMAGE, ALPINE_CHANGES,
        f"building the offline alpine stand-in {ALPINE_IMAGE} from Debian's busybox-static",
        lambda rootfs: _unpack_busybox(rootfs.parent, rootfs, settings),
    )  # fmt: skip


def _ensure_imported(
    client: docker.DockerClient,
    settings: Settings,
    say: Say,
    image: str,
    changes: tuple[str, ...],
    announcement: str,
    make_rootfs: Callable[[Path], None],
) -> docker.models.images.Image:
    """`image`, made when missing by `docker import` of the root filesystem `make_rootfs` fills."""
    with host_lock(settings, f"standin-{image.replace('/', '-').replace(':', '-')}"):
        try:
            return client.images.get(image)
        except docker.errors.ImageNotFound:
            pass
        say(announcement)
        with tempfile.TemporaryDirectory(dir=_mkdir(settings.build_dir)) as work:
            rootfs = Path(work) / "rootfs"
            make_rootfs(rootfs)
            _import(client, rootfs, image, changes)
        return client.images.get(image)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unpack_busybox(work: Path, rootfs: Path, settings: Settings) -> None:
    log_path = _mkdir(settings.logs_dir) / "alpine-standin.log"
    with open(log_path, "w") as log:
        done = subprocess.run(
            ["apt-get", "download", "busybox-static"], cwd=work, stdout=log, stderr=log
        )
        packages = sorted(work.glob("busybox-static_*.deb"))
        if done.returncode != 0 or not packages:
            raise SetupError(
                f"`apt-get download busybox-static` failed (exit {done.returncode}); see {log_path}"
            )
        unpacked = work / "package"
        subprocess.run(["dpkg-deb", "-x", str(packages[0]), str(unpacked)], check=True)
    busybox = unpacked / "bin" / "busybox"
    for folder in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys",
                   "dev", "home", "var", "mnt"):  # fmt: skip
        _mkdir(rootfs / folder)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:  # e.g. bin/ls, usr/bin/wc
        link = rootfs / applet
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    (rootfs / "tmp").chmod(0o1777)


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
        apt_install(["debootstrap", "debian-archive-keyring"], settings)
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


def _import(
    client: docker.DockerClient, rootfs: Path, image: str, changes: tuple[str, ...]
) -> None:
    repository, tag = image.rsplit(":", 1)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        client.api.import_image(
            src=tar.stdout, repository=repository, tag=tag, changes=list(changes)
        )
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise SetupError(f"packing {rootfs} for `docker import` failed (tar exit {tar.returncode})")

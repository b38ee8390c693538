"""Making a Dockerfile's base images available, from the sources a site configures, in order:
the local engine, the registry, registry mirrors, folders of `docker save` archives, and the
offline stand-ins built from Debian packages.
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import requests.exceptions

from grader.domain.dockerfile import ImageName, image_name
from grader.domain.errors import BaseImageUnavailable, ConfigError, GraderError
from grader.domain.settings import (
    CONFIG_NAME,
    DEFAULT_PULL_TIMEOUT_S,
    IMAGE_SOURCES,
    Settings,
    load_config,
)
from grader.engine.standins import (
    StandIn,
    current_recipe,
    provide_standin,
    standin_family,
    standin_of,
)

Say = Callable[[str], None]

SOURCES = IMAGE_SOURCES
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PROVIDED_RECORD = "provided-images.json"  # tags the harness added, so `images prune` finds them


@dataclass(frozen=True)
class ImageSources:
    """Where base images may come from, in the order they are tried."""

    order: tuple[str, ...] = SOURCES
    mirrors: tuple[str, ...] = ()  # "mirror.example.edu", "host:5000" or "host/prefix"
    archives: tuple[Path, ...] = ()  # folders of `docker save` tarballs
    pull_timeout_s: float = DEFAULT_PULL_TIMEOUT_S

    @property
    def standins(self) -> bool:
        return "standins" in self.order

    def to_json(self) -> dict[str, Any]:
        return {
            "order": list(self.order),
            "mirrors": list(self.mirrors),
            "archives": [str(p) for p in self.archives],
            "pull_timeout_s": self.pull_timeout_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageSources:
        return cls(
            order=tuple(data["order"]),
            mirrors=tuple(data["mirrors"]),
            archives=tuple(Path(p) for p in data["archives"]),
            pull_timeout_s=float(data["pull_timeout_s"]),
        )


def load_image_sources(
    config: Path | None,
    settings: Settings,
    *,
    order: str | None = None,
    mirrors: Iterable[str] = (),
    archives: Iterable[Path] = (),
    standins: bool | None = None,
    pull_timeout_s: float | None = None,
) -> ImageSources:
    """The `[images]` table of the configuration (`config`, else `grader.toml` in the working
    folder when there is one) over `settings`, then the command line's settings over it."""
    sources = ImageSources(pull_timeout_s=settings.pull_timeout_s)
    path = config if config is not None else Path(CONFIG_NAME)
    if config is not None or path.is_file():
        sources = _read_config(path, sources)
    if order is not None:
        sources = replace(sources, order=_check_order(order.split(","), "--image-sources"))
    if mirrors := tuple(mirrors):
        sources = replace(sources, mirrors=sources.mirrors + mirrors)
    if archives := tuple(archives):
        sources = replace(sources, archives=sources.archives + archives)
    if standins is False:
        sources = replace(sources, order=tuple(s for s in sources.order if s != "standins"))
    if pull_timeout_s is not None:
        sources = replace(sources, pull_timeout_s=pull_timeout_s)
    for folder in sources.archives:
        if not folder.is_dir():
            raise ConfigError(f"image archives folder {folder} does not exist")
    return sources


def _read_config(path: Path, sources: ImageSources) -> ImageSources:
    images = load_config(path).images
    sources = replace(
        sources,
        order=tuple(s for s in images.sources if images.standins or s != "standins"),
        mirrors=tuple(m.rstrip("/") for m in images.mirrors),
        archives=tuple((path.parent / a).resolve() for a in images.archives),
    )
    if images.pull_timeout_seconds is not None:
        sources = replace(sources, pull_timeout_s=images.pull_timeout_seconds)
    return sources


def _check_order(names: list[str], where: str) -> tuple[str, ...]:
    names = [name.strip() for name in names]
    for name in names:
        if name not in SOURCES:
            raise ConfigError(f"{where}: unknown source {name!r}; known: {', '.join(SOURCES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a source is named twice")
    return tuple(names)


@dataclass(frozen=True)
class BaseImage:
    reference: str
    origin: str  # "local", "registry", "mirror <host>", "archive <file>" or "stand-in"
    standin: StandIn | None = None
    image_id: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"image": self.reference, "source": self.origin, "id": self.image_id}


def mirror_reference(mirror: str, name: ImageName) -> str:
    """The name of `name` on a mirror: official images live under `library/` there."""
    repository = name.repository if "/" in name.repository else f"library/{name.repository}"
    return f"{mirror.rstrip('/')}/{repository}:{name.tag}"


class BaseImageProvider:
    """Finds or provides base images, remembering each answer for the rest of the run.

    Remembering matters for a batch: 300 submissions on the same base try each source once.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        settings: Settings,
        say: Say,
        sources: ImageSources | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.say = say
        self.sources = sources or ImageSources(pull_timeout_s=settings.pull_timeout_s)
        self._known: dict[str, BaseImage | BaseImageUnavailable] = {}
        self._archive_index: dict[str, Path] | None = None

    def ensure(self, reference: str) -> BaseImage:
        key = str(image_name(reference))
        if key not in self._known:
            try:
                self._known[key] = self._provide(reference)
            except BaseImageUnavailable as error:
                self._known[key] = error
        known = self._known[key]
        if isinstance(known, BaseImageUnavailable):
            raise known
        return known

    def remember_unavailable(self, reference: str, tried: list[str]) -> None:
        """Take another process's answer (the controller's) instead of trying again."""
        self._known[str(image_name(reference))] = BaseImageUnavailable(reference, tried)

    def _provide(self, reference: str) -> BaseImage:
        tried: list[str] = []
        sources: dict[str, Callable[[str, list[str]], BaseImage | None]] = {
            "local": self._from_local,
            "registry": self._from_registry,
            "mirrors": self._from_mirrors,
            "archives": self._from_archives,
            "standins": self._from_standins,
        }
        for source in self.sources.order:
            found = sources[source](reference, tried)
            if found is not None:
                image = self.client.images.get(reference)
                return replace(found, image_id=image.id)
        raise BaseImageUnavailable(reference, tried)

    # Each source: the image (tagged as `reference`), or None with what happened added to tried.

    def _from_local(self, reference: str, tried: list[str]) -> BaseImage | None:
        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            tried.append("not on this host")
            return None
        standin = standin_of(image)
        if standin is None:
            return BaseImage(reference, "local")
        if standin.recipe == current_recipe(standin.family):
            return BaseImage(reference, "stand-in", standin)
        # A stand-in of an older recipe: tag the current one under this name instead.
        newer = provide_standin(self.client, reference, self.settings, self.say)
        return BaseImage(reference, "stand-in", newer)

    def _from_registry(self, reference: str, tried: list[str]) -> BaseImage | None:
        error = self._pull(str(image_name(reference)))
        if error is None:
            return BaseImage(reference, "registry")
        tried.append(f"pull failed ({error})")
        return None

    def _from_mirrors(self, reference: str, tried: list[str]) -> BaseImage | None:
        name = image_name(reference)
        for mirror in self.sources.mirrors:
            mirrored = mirror_reference(mirror, name)
            error = self._pull(mirrored)
            if error is not None:
                tried.append(f"mirror {mirror}: {error}")
                continue
            # Tagged under the name the Dockerfile uses, so that it builds unchanged.
            self.client.images.get(mirrored).tag(name.repository, name.tag)
            self._record(str(name), f"mirror {mirror}")
            self._record(mirrored, f"mirror {mirror}")
            return BaseImage(reference, f"mirror {mirror}")
        if not self.sources.mirrors:
            tried.append("no mirror configured")
        return None

    def _from_archives(self, reference: str, tried: list[str]) -> BaseImage | None:
        archive = self.archive_index().get(str(image_name(reference)))
        if archive is None:
            folders = ", ".join(str(f) for f in self.sources.archives) or "none configured"
            tried.append(f"no image archive has it (folders: {folders})")
            return None
        self.say(f"loading {reference} from {archive}")
        try:
            load_archive(self.client, archive)
            self.client.images.get(reference)
        except (docker.errors.APIError, OSError) as error:
            tried.append(f"loading {archive.name} failed ({error})")
            return None
        self._record(str(image_name(reference)), f"archive {archive}")
        return BaseImage(reference, f"archive {archive.name}")

    def _from_standins(self, reference: str, tried: list[str]) -> BaseImage | None:
        if standin_family(reference) is None:
            tried.append(
                "no offline stand-in exists for it (stand-ins exist for pytorch/pytorch:*, "
                "pytorch/torchserve:* and alpine:*)"
            )
            return None
        try:
            standin = provide_standin(self.client, reference, self.settings, self.say)
        except GraderError as error:
            tried.append(f"building the offline stand-in failed ({error})")
            return None
        assert standin is not None
        self.say(f"using an offline stand-in for {reference}")
        self._record(str(image_name(reference)), "stand-in")
        return BaseImage(reference, "stand-in", standin)

    # Helpers.

    def archive_index(self) -> dict[str, Path]:
        """Image name -> the archive that holds it, read from each archive's manifest."""
        if self._archive_index is None:
            self._archive_index = {}
            for folder in self.sources.archives:
                for archive in sorted(folder.iterdir()) if folder.is_dir() else []:
                    if archive.name.lower().endswith(ARCHIVE_SUFFIXES):
                        for tag in archive_tags(archive):
                            self._archive_index.setdefault(str(image_name(tag)), archive)
        return self._archive_index

    def _pull(self, reference: str) -> str | None:
        """Pull within the time limit; None on success, else the reason in a few words."""
        name = image_name(reference)
        timeout = self.sources.pull_timeout_s
        # A fresh client reads Docker's own credentials (config.json) as they are now; a read
        # timeout bounds a stalled pull, the deadline a slow one.
        api = docker.APIClient(version=self.client.api.api_version, timeout=int(timeout),
                               **docker.utils.kwargs_from_env())  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            for chunk in api.pull(name.repository, tag=name.tag, stream=True, decode=True):
                if "error" in chunk:
                    return str(chunk["error"]).strip()
                if time.monotonic() > deadline:
                    return f"not finished within {timeout:.0f} s"
        except docker.errors.APIError as error:
            return (error.explanation or str(error)).strip()
        except requests.exceptions.RequestException as error:
            return f"no answer from the registry ({type(error).__name__})"
        finally:
            api.close()
        try:
            self.client.images.get(str(name))
        except docker.errors.ImageNotFound:
            return "the engine reported success but has no such image"
        return None

    def _record(self, tag: str, origin: str) -> None:
        record_provided(self.settings, tag, origin)


def load_archive(client: docker.DockerClient, archive: Path) -> None:
    """`docker load` of one archive, streamed from the file (gzip too: the engine unpacks it)."""
    with open(archive, "rb") as data:
        # The stubs leave load_image (like inspect_distribution) unannotated.
        for _ in client.api.load_image(data):  # type: ignore[no-untyped-call]
            pass


def archive_tags(archive: Path) -> list[str]:
    """The image names a `docker save` archive holds (from its manifest.json)."""
    try:
        with tarfile.open(archive) as handle:
            member = handle.extractfile("manifest.json")
            manifest = json.load(member) if member else []
    except (tarfile.TarError, KeyError, OSError, ValueError):
        return []
    return [tag for entry in manifest for tag in entry.get("RepoTags") or []]


def record_provided(settings: Settings, tag: str, origin: str) -> None:
    path = settings.home / PROVIDED_RECORD
    record = provided_images(settings)
    record[tag] = origin
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def provided_images(settings: Settings) -> dict[str, str]:
    """Tags the harness added to the engine (from mirrors, archives, stand-ins): tag -> origin."""
    path = settings.home / PROVIDED_RECORD
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Nowhere:
    """No source has an image: what each one said."""

    tried: tuple[str, ...]


def where_from(provider: BaseImageProvider, reference: str) -> str | Nowhere:
    """The source that would provide `reference`, found without fetching anything (registries
    are asked for the image's manifest only), or what every source said."""
    name = image_name(reference)
    tried: list[str] = []
    for source in provider.sources.order:
        if source == "local":
            try:
                provider.client.images.get(reference)
                return "local"
            except docker.errors.ImageNotFound:
                tried.append("not on this host")
        elif source == "registry":
            error = _manifest_error(provider, str(name))
            if error is None:
                return "registry"
            tried.append(f"registry: {error}")
        elif source == "mirrors":
            for mirror in provider.sources.mirrors:
                error = _manifest_error(provider, mirror_reference(mirror, name))
                if error is None:
                    return f"mirror {mirror}"
                tried.append(f"mirror {mirror}: {error}")
        elif source == "archives":
            archive = provider.archive_index().get(str(name))
            if archive is not None:
                return f"archive {archive}"
            tried.append("no image archive has it")
        elif standin_family(reference) is not None:
            return "stand-in"
        else:
            tried.append("no offline stand-in exists for it")
    return Nowhere(tuple(tried))


def _manifest_error(provider: BaseImageProvider, reference: str) -> str | None:
    timeout = min(30, int(provider.sources.pull_timeout_s))
    api = docker.APIClient(version=provider.client.api.api_version, timeout=timeout,
                           **docker.utils.kwargs_from_env())  # fmt: skip
    try:
        api.inspect_distribution(reference)  # type: ignore[no-untyped-call]
        return None
    except docker.errors.APIError as error:
        text = (error.explanation or str(error)).strip()
        return text.splitlines()[0][:200] if text else type(error).__name__
    except requests.exceptions.RequestException as error:
        return f"no answer ({type(error).__name__})"
    finally:
        api.close()

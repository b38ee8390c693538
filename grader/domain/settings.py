"""Where the harness keeps its state on the host, with environment-variable overrides, and the
schema of the site's configuration file, `grader.toml`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import msgspec

from grader.domain.config import Invalid, Schema, convert, load_toml
from grader.domain.errors import ConfigError

CONFIG_NAME = "grader.toml"
ImageSource = Literal["local", "registry", "mirrors", "archives", "standins"]
IMAGE_SOURCES: tuple[ImageSource, ...] = get_args(ImageSource)  # the default order
DEFAULT_PULL_TIMEOUT_S = 300.0
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Name = Annotated[str, msgspec.Meta(min_length=1)]


class ImagesTable(Schema, frozen=True):
    """`[images]`: where base images may come from."""

    sources: tuple[ImageSource, ...] = IMAGE_SOURCES  # tried in this order
    mirrors: tuple[Name, ...] = ()  # "mirror.example.edu", "host:5000" or "host/prefix"
    archives: tuple[Name, ...] = ()  # folders of `docker save` tarballs, relative to the file
    standins: bool = True  # false: never stand in for a base image, whatever `sources` says
    pull_timeout_seconds: Seconds | None = None  # None: GRADER_PULL_TIMEOUT, else its default

    def __post_init__(self) -> None:
        if len(set(self.sources)) != len(self.sources):
            raise Invalid("sources", "a source is named twice; name each once")


class GraderConfig(Schema, frozen=True):
    """`grader.toml`."""

    images: ImagesTable = ImagesTable()


def load_config(path: Path) -> GraderConfig:
    return load_toml(path, GraderConfig, ConfigError, what="configuration file")


class _Environment(Schema, frozen=True):
    GRADER_HOME: str | None = None
    DOCKER_HOST: str | None = None
    GRADER_PULL_TIMEOUT: Seconds = DEFAULT_PULL_TIMEOUT_S


@dataclass(frozen=True)
class Settings:
    """Host-side locations and engine settings.

    `home` holds datasets, downloaded wheels, set-up logs and the stand-in build area. It is shared
    by every run on the host so that set-up is done once.
    """

    home: Path
    docker_host: str | None
    pull_timeout_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment variables give; an empty variable counts as unset."""
        given = {
            name: environ[name] for name in _Environment.__struct_fields__ if environ.get(name)
        }
        env = convert(given, _Environment, source="environment", error=ConfigError, strict=False)
        home = env.GRADER_HOME or Path.home() / ".cache" / "lab5-grader"
        return cls(
            home=Path(home).expanduser().resolve(),
            docker_host=env.DOCKER_HOST,
            pull_timeout_s=env.GRADER_PULL_TIMEOUT,
        )

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def build_dir(self) -> Path:
        return self.home / "build"

    @property
    def runs_dir(self) -> Path:
        """One folder per grading run: its lock and scratch space."""
        return self.home / "runs"

    @property
    def kept_images_dir(self) -> Path:
        """One empty file per ended run whose images were kept (`--keep-images`)."""
        return self.home / "kept-images"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

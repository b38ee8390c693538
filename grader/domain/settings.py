"""Where the harness keeps its state on the host, with environment-variable overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
    def from_env(cls) -> Settings:
        home = os.environ.get("GRADER_HOME") or Path.home() / ".cache" / "lab5-grader"
        return cls(
            home=Path(home).expanduser().resolve(),
            docker_host=os.environ.get("DOCKER_HOST"),
            pull_timeout_s=float(os.environ.get("GRADER_PULL_TIMEOUT", "300")),
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

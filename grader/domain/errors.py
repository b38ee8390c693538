"""The harness's errors.

`GraderError` and its subclasses carry a message written for the person who must act on it: a TA
setting up a host or a student fixing a submission. They never need a traceback to be understood.
"""

from __future__ import annotations

from grader.domain.reasons import Reason


class GraderError(Exception):
    """Base of every error the harness raises on purpose."""


class ReasonedError(GraderError):
    """An error a check fails with: the human message, and the reason as data (code and facts)
    for hints and reports."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class EngineUnavailable(GraderError):
    """No Docker engine answers and the harness cannot start one."""


class SetupError(GraderError):
    """A set-up step (package install, stand-in image, dataset) failed."""


class DatasetError(GraderError):
    """The MNIST directory is missing, partial or corrupt."""


class RubricError(GraderError):
    """The rubric file is invalid; the message names the file and the key."""


class CatalogError(GraderError):
    """A catalog of the harness (the hints in hints.toml) is invalid; the message is one line
    naming the file and the key."""


class ManifestError(GraderError):
    """A submission's layout or `submission.toml` is invalid."""


class DockerfileError(GraderError):
    """A Dockerfile cannot be read or parsed."""


class BaseImageUnavailable(ReasonedError):
    """A base image can be neither found locally, pulled, nor stood in for."""

    def __init__(self, image: str, tried: list[str]) -> None:
        self.image = image
        self.tried = tried
        super().__init__(
            f"base image {image!r} is not available: " + "; ".join(tried),
            Reason("base-image", {"image": image}),
        )


class ConfigError(GraderError):
    """The grader's configuration file or its command-line settings are invalid."""


class EngineFault(GraderError):
    """The Docker engine failed in a way no submission can cause: an infrastructure error."""

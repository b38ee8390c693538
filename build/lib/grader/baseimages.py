"""Making a Dockerfile's base images available: local, else pulled, else an offline stand-in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import docker
import docker.errors
import docker.utils
import requests.exceptions

from grader.dockerfile import image_name
from grader.errors import BaseImageUnavailable, GraderError
from grader.settings import Settings
from grader.standins import StandIn, current_recipe, provide_standin, standin_of

Say = Callable[[str], None]


@dataclass(frozen=True)
class BaseImage:
    reference: str
    origin: str  # "local", "pulled" or "stand-in"
    standin: StandIn | None = None


class BaseImageProvider:
    """Finds or provides base images, remembering each answer for the rest of the run.

    Remembering matters for a batch: 300 submissions on the same base try the registry once.
    """

    def __init__(self, client: docker.DockerClient, settings: Settings, say: Say) -> None:
        self.client = client
        self.settings = settings
        self.say = say
        self._known: dict[str, BaseImage | BaseImageUnavailable] = {}

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

    def _provide(self, reference: str) -> BaseImage:
        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            pass
        else:
            standin = standin_of(image)
            if standin is None:
                return BaseImage(reference, "local")
            if standin.recipe == current_recipe(standin.family):
                return BaseImage(reference, "stand-in", standin)
            # A stand-in of an older recipe: tag the current one under this name instead.
            newer = provide_standin(self.client, reference, self.settings, self.say)
            return BaseImage(reference, "stand-in", newer)
        tried = ["not on this host"]
        pull_error = self._pull(reference)
        if pull_error is None:
            return BaseImage(reference, "pulled")
        tried.append(f"pull failed ({pull_error})")
        try:
            standin = provide_standin(self.client, reference, self.settings, self.say)
        except GraderError as error:
            tried.append(f"building the offline stand-in failed ({error})")
            raise BaseImageUnavailable(reference, tried) from error
        if standin is None:
            tried.append(
                "no offline stand-in exists for it (stand-ins exist for pytorch/pytorch:*)"
            )
            raise BaseImageUnavailable(reference, tried)
        self.say(f"using an offline stand-in for {reference}")
        return BaseImage(reference, "stand-in", standin)

    def _pull(self, reference: str) -> str | None:
        """Pull within the configured time; None on success, else the reason in a few words."""
        name = image_name(reference)
        timeout = self.settings.pull_timeout_s
        # A read timeout bounds a stalled pull; the deadline bounds a slow one.
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
            self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return "the engine reported success but has no such image"
        return None

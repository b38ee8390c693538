"""Is the server TorchServe, and does it serve the model that training produced?

Everything is read through the engine, never by running a program of the submission's image:
the container's processes by the engine's `top` (the host's `ps`), files by `get_archive`
(`docker cp`), each bounded in size. A model archive is a zip (`.mar`) whose
`MAR-INF/MANIFEST.json` names the serialized weights; those bytes are hashed and compared with
the file the inference image was built with.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import shlex
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import docker.models.containers
import requests

TORCHSERVE_MAIN = "org.pytorch.serve.ModelServer"  # the Java class every TorchServe runs
ARCHIVE_LIMIT_BYTES = 1 << 30  # larger archives are not copied out, and stay unverified
CONFIG_LIMIT_BYTES = 1 << 20
MANIFEST = "MAR-INF/MANIFEST.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class ServedModel:
    """What was found; `problem` says why the served weights could not be told (else None)."""

    archive: str | None = None
    serialized_file: str | None = None
    sha256: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Weights:
    """The serialized file a model archive names, and the SHA-256 of its bytes."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Unreadable:
    """Why a file of the container, or a model archive, could not be read."""

    why: str


Container = docker.models.containers.Container


def server_processes(container: Container) -> list[str] | None:
    """The command lines running in the container (None: the engine could not tell)."""
    try:
        top = container.top(ps_args="-eo pid,args")
    except (docker.errors.APIError, requests.RequestException):
        return None
    titles = [str(t).upper() for t in top.get("Titles") or []]
    column = next((i for i, t in enumerate(titles) if t in ("COMMAND", "CMD", "ARGS")), -1)
    return [str(row[column]) for row in top.get("Processes") or [] if len(row) > column >= 0]


def is_torchserve(processes: Sequence[str]) -> bool:
    return any(TORCHSERVE_MAIN in line for line in processes)


def model_store(processes: Sequence[str], working_dir: str) -> str | None:
    """The `-s` argument TorchServe's launcher gives its Java server (absolute)."""
    for line in processes:
        if TORCHSERVE_MAIN not in line:
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        for flag, value in itertools.pairwise(words):
            if flag in ("-s", "--model-store"):
                return posixpath.normpath(posixpath.join(working_dir or "/", value))
    return None


def archive_name(description: Any) -> str | None:
    """`modelUrl` of a `GET /models/<name>` answer: the archive's name in the model store."""
    versions = description if isinstance(description, list) else [description]
    for version in versions:
        if isinstance(version, dict) and isinstance(version.get("modelUrl"), str):
            return str(version["modelUrl"])
    return None


def copy_out(container: Container, path: str, limit: int, into: Path) -> Path | Unreadable:
    """One regular file of the container copied to `into`, or why it was not."""
    try:
        stream, stat = container.get_archive(path)
    except docker.errors.NotFound:
        return Unreadable(f"{path} does not exist in the container")
    except (docker.errors.APIError, requests.RequestException) as error:
        return Unreadable(f"{path} could not be read from the container ({error})")
    stat = stat or {}
    if stat.get("linkTarget"):
        return Unreadable(f"{path} is a link (to {stat['linkTarget']}), not the archive itself")
    size = int(stat.get("size") or 0)
    if size > limit:
        return Unreadable(f"{path} is {size} bytes, more than the {limit} the grader reads")
    tar_path = into / "copy.tar"
    received = 0
    with open(tar_path, "wb") as handle:
        for chunk in stream:
            received += len(chunk)
            if received > limit + (1 << 20):  # the tar's own headers take a few kB
                return Unreadable(f"{path}: the engine sent more than the announced {size} bytes")
            handle.write(chunk)
    try:
        with tarfile.open(tar_path) as archive:
            member = next((m for m in archive.getmembers() if m.isfile()), None)
            source = archive.extractfile(member) if member is not None else None
            if source is None:
                return Unreadable(f"{path} is not a regular file")
            target = into / "file"
            with open(target, "wb") as out:
                while block := source.read(CHUNK):
                    out.write(block)
    except tarfile.TarError as error:
        return Unreadable(f"{path} could not be unpacked ({error})")
    finally:
        tar_path.unlink(missing_ok=True)
    return target


def _config_model_store(container: Container, processes: Sequence[str], into: Path) -> str | None:
    """`model_store` of the `-f` configuration file, when the Java command line has no `-s`."""
    for line in processes:
        words = line.split()
        if TORCHSERVE_MAIN in line and "-f" in words[:-1]:
            config = words[words.index("-f") + 1]
            copied = copy_out(container, config, CONFIG_LIMIT_BYTES, into)
            if isinstance(copied, Unreadable):
                return None
            for entry in copied.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = entry.partition("=")
                if key.strip() == "model_store" and value.strip():
                    return value.strip()
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def serialized_weights(archive: Path) -> Weights | Unreadable:
    """The serialized file a model archive names, hashed, or why it cannot be read."""
    try:
        with zipfile.ZipFile(archive) as mar:
            try:
                manifest = json.loads(mar.read(MANIFEST))
            except KeyError:
                return Unreadable(f"it has no {MANIFEST} (not made by torch-model-archiver)")
            except ValueError as error:
                return Unreadable(f"its {MANIFEST} is not JSON ({error})")
            model = manifest.get("model") if isinstance(manifest, dict) else None
            name = model.get("serializedFile") if isinstance(model, dict) else None
            if not isinstance(name, str) or not name:
                return Unreadable(f"its {MANIFEST} names no serializedFile")
            try:
                info = mar.getinfo(name)
            except KeyError:
                return Unreadable(f"it does not hold the serialized file {name} its manifest names")
            digest = hashlib.sha256()
            with mar.open(info) as source:
                while block := source.read(CHUNK):
                    digest.update(block)
            return Weights(name, digest.hexdigest())
    except (zipfile.BadZipFile, OSError) as error:
        return Unreadable(f"it is not a zip archive ({error}); only .mar archives are compared")


def served_model(container: Container, description: Any, processes: Sequence[str]) -> ServedModel:
    """The weights inside the archive a running TorchServe loaded its model from."""
    name = archive_name(description)
    if name is None:
        return ServedModel(problem="the model description names no archive (modelUrl)")
    if "://" in name:
        return ServedModel(problem=f"the model was loaded from a URL ({name}), not the image")
    try:
        working_dir = str(container.attrs.get("Config", {}).get("WorkingDir") or "/")
    except AttributeError:
        working_dir = "/"
    with tempfile.TemporaryDirectory(prefix="lab5-served-model-") as scratch:
        store = model_store(processes, working_dir) or _config_model_store(
            container, processes, Path(scratch)
        )
        if store is None:
            return ServedModel(problem="TorchServe's command line names no model store")
        path = posixpath.normpath(posixpath.join(working_dir, store, name))
        copied = copy_out(container, path, ARCHIVE_LIMIT_BYTES, Path(scratch))
        if isinstance(copied, Unreadable):
            return ServedModel(archive=path, problem=copied.why)
        weights = serialized_weights(copied)
        if isinstance(weights, Unreadable):
            return ServedModel(archive=path, problem=f"{path}: {weights.why}")
        return ServedModel(archive=path, serialized_file=weights.name, sha256=weights.sha256)

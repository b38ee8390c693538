"""Submissions handed in as archives (`.zip`, `.tar.gz`, `.tgz`, `.tar`), unpacked safely.

Nothing of an archive is written until all of it has been checked: every entry must stay inside
the submission (no absolute paths, no `..`), be a regular file or a folder (no links, devices or
pipes), and the whole must stay within limits on files, bytes and compression ratio. A refused
archive gets one line naming the entry and the rule.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from grader.errors import GraderError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
CHUNK = 1 << 20


class ArchiveRefused(GraderError):
    """An archive that is not unpacked, and why."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = 10_000
    max_bytes: int = 2 * 10**9  # unpacked
    max_ratio: float = 200.0  # unpacked bytes per archive byte


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "folder" or what else it is
    size: int


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def submission_folder(path: Path, unpack_into: Path) -> Path:
    """The folder to grade for a submission handed in as `path`: the folder itself, or the
    archive unpacked under `unpack_into` (ArchiveRefused when it is not safe)."""
    return unpack(path, unpack_into) if is_archive(path) else path


def unpack(archive: Path, into: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Check `archive`, then unpack it to `into/<stem>` (once per content) and return the
    submission folder: that folder, or its single top-level folder when everything is in one.
    """
    entries = list(_entries(archive))
    _check(archive, entries, limits)
    digest = _sha256(archive)[:12]
    target = into / f"{archive_stem(archive)}-{digest}"
    if not target.is_dir():
        into.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=into, prefix=".unpacking-") as work:
            _extract(archive, Path(work) / "content", entries)
            os.replace(Path(work) / "content", target)
    children = [child for child in target.iterdir() if not child.name.startswith("__MACOSX")]
    return children[0] if len(children) == 1 and children[0].is_dir() else target


def _entries(archive: Path) -> Iterator[Entry]:
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as handle:
                for info in handle.infolist():
                    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0: not recorded
                    if info.is_dir():
                        kind = "folder"
                    elif file_type == stat.S_IFLNK:
                        kind = "symbolic link"
                    elif file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                        kind = "special file"
                    else:
                        kind = "file"
                    yield Entry(info.filename, kind, info.file_size)
            return
        with tarfile.open(archive) as handle:
            for member in handle:
                yield Entry(member.name, _tar_kind(member), member.size)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise ArchiveRefused(f"{archive.name}: not a readable archive ({error})") from None


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "folder"
    if member.isfile():
        return "file"
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isfifo():
        return "named pipe"
    if member.isdev():
        return "device file"
    return "special file"


def _check(archive: Path, entries: list[Entry], limits: ArchiveLimits) -> None:
    refuse = f"{archive.name}: refused, nothing was unpacked"
    files = total = 0
    for entry in entries:
        path = PurePosixPath(entry.name)
        if entry.name.startswith(("/", "\\")) or path.is_absolute() or ":" in path.parts[0]:
            raise ArchiveRefused(f"{refuse}: entry {entry.name!r} has an absolute path")
        if ".." in path.parts or "\\" in entry.name:
            raise ArchiveRefused(f"{refuse}: entry {entry.name!r} leaves the submission folder")
        if entry.kind not in ("file", "folder"):
            raise ArchiveRefused(
                f"{refuse}: entry {entry.name!r} is a {entry.kind}; hand in regular files only"
            )
        if entry.kind == "file":
            files += 1
            total += max(0, entry.size)
    if files > limits.max_files:
        raise ArchiveRefused(f"{refuse}: {files:,} files, more than {limits.max_files:,}")
    if total > limits.max_bytes:
        raise ArchiveRefused(
            f"{refuse}: {total / 1e6:,.0f} MB unpacked, more than {limits.max_bytes / 1e6:,.0f} MB"
        )
    ratio = total / max(1, archive.stat().st_size)
    if ratio > limits.max_ratio:
        raise ArchiveRefused(
            f"{refuse}: it unpacks to {ratio:,.0f} times its size (at most "
            f"{limits.max_ratio:g}); this looks like an archive bomb"
        )


def _extract(archive: Path, folder: Path, entries: list[Entry]) -> None:
    """Write the checked entries."""
    folder.mkdir()
    sizes = {entry.name: entry.size for entry in entries if entry.kind == "file"}
    for entry in entries:
        if entry.kind == "folder":
            (folder / entry.name).mkdir(parents=True, exist_ok=True)
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as handle:
            for name in sizes:
                with handle.open(name) as source:
                    _copy(source, folder / name)
        return
    with tarfile.open(archive) as handle:
        for member in handle:
            if member.name in sizes:
                source = handle.extractfile(member)
                assert source is not None
                with source:
                    _copy(source, folder / member.name)


def _copy(source: IO[bytes], target: Path) -> None:
    # zipfile and tarfile read no more than an entry's declared size, which _check bounded.
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as output:
        shutil.copyfileobj(source, output, CHUNK)
    target.chmod(0o644)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

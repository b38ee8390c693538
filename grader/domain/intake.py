"""Taking submissions in: folders copied privately, archives (`.zip`, `.tar.gz`, `.tgz`, `.tar`)
unpacked safely.

A folder is copied before any use into a private folder of the run, without following a link,
within the archives' limits. A link that leads out of the submission is kept as a link that leads
nowhere, as a docker build context treats it: a `COPY` of it fails, nothing else changes.

Nothing of an archive is written until all of it has been checked: every entry must stay inside
the submission (no absolute paths, no `..`), be a regular file or a folder (no links, devices or
pipes), not clash with another (a file where a folder is needed), and the whole must stay within
limits on files, bytes and compression ratio. A refused archive gets one line naming the entry and
the rule.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from grader.domain.errors import GraderError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
CHUNK = 1 << 20
# What reading a damaged, encrypted or exotic archive raises: its fault, refused like it.
UNREADABLE = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    RuntimeError,
    NotImplementedError,
    ValueError,
    UnicodeError,
)


class IntakeRefused(GraderError):
    """A submission that is not taken in, and why (that submission alone scores 0)."""


class ArchiveRefused(IntakeRefused):
    """An archive that is not unpacked, and why."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = 10_000
    max_bytes: int = 2 * 10**9  # unpacked
    max_ratio: float = 200.0  # unpacked bytes per archive byte
    max_depth: int = 64  # folders in folders: deeper trees break tools that recurse (rmtree)


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


def take_in(
    path: Path, unpack_into: Path, stage_into: Path, limits: ArchiveLimits = ArchiveLimits()
) -> tuple[Path, str]:
    """The private folder to grade for a submission handed in as `path` (a folder or an
    archive) and the name it was handed in under; IntakeRefused says why there is none."""
    name = path.name
    if is_archive(path):
        path = unpack(path, unpack_into, limits)
        # an archive of one folder is named by that folder, one of loose files by itself
        name = path.name if path.parent != unpack_into else archive_stem(Path(name))
    return stage(path, stage_into, limits), name


def stage(source: Path, into: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """A private copy of the folder `source` under `into` (made once: a second call, such as a
    parallel worker's, finds it). IntakeRefused when the folder is over the limits."""
    source = source.resolve()
    # Under a folder of its own, the copy keeps the name: messages name folders as handed in.
    key = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    target, refused = into / key / source.name, into / f"{key}.refused"
    if target.is_dir():
        return target
    if refused.is_file():  # refused already in this run: not copied again up to the limit
        raise IntakeRefused(refused.read_text(encoding="utf-8"))
    into.mkdir(parents=True, exist_ok=True)
    into.chmod(0o700)
    with tempfile.TemporaryDirectory(dir=into, prefix=".staging-") as work:
        try:
            copy_tree(source, Path(work) / "content", limits)
        except IntakeRefused as error:
            refused.write_text(str(error), encoding="utf-8")
            raise
        target.parent.mkdir(exist_ok=True)
        try:
            os.replace(Path(work) / "content", target)
        except OSError:
            if not target.is_dir():  # not a parallel worker's copy made meanwhile
                raise
    return target


def copy_tree(source: Path, target: Path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Copy the folder `source` to the new folder `target`: folders, regular files (modes and
    times kept, set-id bits dropped) and links, never following one. Pipes, sockets and devices
    are left out. A link whose target is not inside `target` then leads nowhere.
    IntakeRefused when `source` holds more than the limits allow."""
    refuse = f"{source.name}/: refused, not copied"
    target.mkdir(mode=0o700)
    folders: list[tuple[Path, os.stat_result]] = []
    links: list[Path] = []
    files = total = 0
    pending = [Path()]
    try:
        while pending:
            relative = pending.pop()
            with os.scandir(source / relative) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
            for entry in entries:
                inner = relative / entry.name
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    if len(inner.parts) > limits.max_depth:
                        raise IntakeRefused(
                            f"{refuse}: {inner.parent}/ holds folders more than "
                            f"{limits.max_depth} deep"
                        )
                    (target / inner).mkdir(mode=0o700)
                    folders.append((inner, info))
                    pending.append(inner)
                elif stat.S_ISLNK(info.st_mode):
                    os.symlink(os.readlink(entry.path), target / inner)
                    links.append(target / inner)
                elif stat.S_ISREG(info.st_mode):
                    total += _copy_file(Path(entry.path), target / inner, limits.max_bytes - total)
                else:
                    continue
                files += 1
                if files > limits.max_files:
                    raise IntakeRefused(
                        f"{refuse}: more than {limits.max_files:,} files, folders and links; "
                        "leave virtualenvs, datasets and checkpoints out"
                    )
    except _TooBig:
        raise IntakeRefused(
            f"{refuse}: more than {limits.max_bytes / 1e6:,.0f} MB; leave datasets, "
            "virtualenvs and checkpoints out (the grader mounts MNIST at /data)"
        ) from None
    except OSError as error:
        raise IntakeRefused(f"{refuse}: {error.strerror or error} ({error.filename})") from None
    for inner, info in reversed(folders):  # innermost first: a read-only folder is filled
        os.chmod(target / inner, stat.S_IMODE(info.st_mode) & 0o777)
        os.utime(target / inner, ns=(info.st_atime_ns, info.st_mtime_ns))
    contain_links(target, links)


class _TooBig(Exception):
    pass


def _copy_file(source: Path, target: Path, budget: int) -> int:
    """Copy one regular file without following a link or blocking on a pipe; its bytes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    reading = os.open(source, flags)
    try:
        info = os.fstat(reading)
        if not stat.S_ISREG(info.st_mode):  # swapped since it was listed
            raise OSError(0, "not a regular file", str(source))
        copied = 0
        writing = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(writing, "wb") as output:
            while chunk := os.read(reading, CHUNK):
                copied += len(chunk)
                if copied > budget:
                    raise _TooBig
                output.write(chunk)
            os.fchmod(writing, stat.S_IMODE(info.st_mode) & 0o777)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
        return copied
    finally:
        os.close(reading)


NOWHERE = "/dev/null/link-out-of-the-submission"  # under a device: no folder can ever be there


def contain_links(root: Path, links: list[Path]) -> list[Path]:
    """Make every link among `links` whose resolution leaves `root` lead nowhere; the changed
    links. Repeated until none leaves, since a link may go out through another one."""
    root = root.resolve()
    changed: list[Path] = []
    while True:
        leaving = [
            link
            for link in links
            if link not in changed and not Path(os.path.realpath(link)).is_relative_to(root)
        ]
        if not leaving:
            return changed
        for link in leaving:
            link.unlink()
            os.symlink(NOWHERE, link)
        changed.extend(leaving)


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
    from grader.domain.submission import is_submission_dir  # which imports this module

    if is_submission_dir(target):  # loose files, or just `train/`: the archive is the folder
        return target
    children = [child for child in target.iterdir() if not child.name.startswith("__MACOSX")]
    return children[0] if len(children) == 1 and children[0].is_dir() else target


def _entries(archive: Path) -> Iterator[Entry]:
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as handle:
                for info in handle.infolist():
                    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0: not recorded
                    if info.filename.endswith("/"):  # ZipInfo.is_dir() fails on ""
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
    except UNREADABLE as error:
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
    kinds: dict[str, str] = {}  # where each entry goes -> "file" or "folder"
    for entry in entries:
        path = PurePosixPath(entry.name)
        if (
            entry.name.startswith(("/", "\\"))
            or path.is_absolute()
            or ":" in entry.name.split("/")[0]
        ):
            raise ArchiveRefused(f"{refuse}: entry {entry.name!r} has an absolute path")
        if ".." in path.parts or "\\" in entry.name:
            raise ArchiveRefused(f"{refuse}: entry {entry.name!r} leaves the submission folder")
        if entry.kind not in ("file", "folder"):
            raise ArchiveRefused(
                f"{refuse}: entry {entry.name!r} is a {entry.kind}; hand in regular files only"
            )
        name = normal_name(entry.name)
        if not name:
            if entry.kind == "folder":
                continue  # the top folder itself, as `tar -C dir -czf x.tar.gz .` writes `./`
            raise ArchiveRefused(f"{refuse}: entry {entry.name!r} is a file without a name")
        if kinds.setdefault(name, entry.kind) != entry.kind:
            raise ArchiveRefused(
                f"{refuse}: {name!r} is both a file and a folder in it; keep one of them"
            )
        if name.count("/") >= limits.max_depth:
            raise ArchiveRefused(
                f"{refuse}: entry {entry.name[:200]!r}... is more than {limits.max_depth} folders "
                "deep"
            )
        if entry.kind == "file":
            files += 1
            total += max(0, entry.size)
    for name in kinds:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if kinds.get(folder) == "file":
                raise ArchiveRefused(
                    f"{refuse}: entry {name!r} needs a folder {folder!r} where the archive has a "
                    "file; keep one of them"
                )
    if files > limits.max_files:
        raise ArchiveRefused(f"{refuse}: {files:,} files, more than {limits.max_files:,}")
    if len(kinds) - files > limits.max_files:
        raise ArchiveRefused(
            f"{refuse}: {len(kinds) - files:,} folders, more than {limits.max_files:,}"
        )
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


def normal_name(name: str) -> str:
    """Where an entry goes, relative to the top folder ("" for the top folder: `.`, `./`)."""
    return "/".join(PurePosixPath(name).parts)


def _extract(archive: Path, folder: Path, entries: list[Entry]) -> None:
    """Write the checked entries; of entries of one name, the last one counts (as tar has it)."""
    folder.mkdir()
    for entry in entries:
        if entry.kind == "folder" and normal_name(entry.name):
            (folder / normal_name(entry.name)).mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as handle:
                for info in handle.infolist():
                    if not info.filename.endswith("/"):
                        with handle.open(info) as source:
                            _copy(source, folder / normal_name(info.filename))
            return
        with tarfile.open(archive) as handle:
            for member in handle:
                if member.isfile():
                    extracted = handle.extractfile(member)
                    assert extracted is not None
                    with extracted:
                        _copy(extracted, folder / normal_name(member.name))
    except UNREADABLE as error:
        raise ArchiveRefused(
            f"{archive.name}: refused, it could not be unpacked ({type(error).__name__}: {error})"
        ) from None


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

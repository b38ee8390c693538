"""What a training run writes, bounded: its output folder on the host, and copying files out.

The training container's `/output` is a folder on the host. Where the harness may mount (root
on the engine's host) it is a tmpfs of a fixed size, so writing past it fails inside the
container (ENOSPC) and nothing lands on the host's disk; the pages count against the
container's memory. Elsewhere it is a plain folder whose size is watched while training runs.

Files are copied out only when they are regular files within their size limit, holes kept: a
sparse file of gigabytes would otherwise be written out dense.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
from pathlib import Path

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2
_CHUNK = 1 << 20
_DOCKERD_PID_FILES = (Path("/var/run/docker.pid"), Path("/run/docker.pid"))


class OutputFolder:
    """A training run's output folder of at most `size_bytes`, writable by any user.

    Use as a context manager; afterwards the folder is unmounted and removed.
    """

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes
        self.mounted = False
        self.note: str | None = None  # why the size is only watched, not enforced

    def __enter__(self) -> OutputFolder:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        self.path.chmod(0o777)  # the image may run as a non-root user
        problem = _mount_tmpfs(self.path, self.size_bytes) if _engine_shares_mounts() else (
            "the Docker engine runs in another mount namespace"
        )  # fmt: skip
        if problem is None:
            self.mounted = True
        else:
            self.note = (
                f"the training's output folder is watched, not bounded ({problem}): the harness "
                "needs to run as root on the engine's host to bound it"
            )
        return self

    def over_limit(self) -> str | None:
        """Why the folder is over its size (only possible when it could not be mounted)."""
        if self.mounted:
            return None
        used = allocated_bytes(self.path)
        if used <= self.size_bytes:
            return None
        return (
            f"training wrote {used / 1e6:,.0f} MB to $OUTPUT_DIR, more than the limit of "
            f"{self.size_bytes / 1e6:,.0f} MB; write only the model (and metrics.json) there"
        )

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            _unmount(self.path)
            self.mounted = False
        shutil.rmtree(self.path, ignore_errors=True)


def allocated_bytes(folder: Path) -> int:
    """The disk space the files under `folder` take (holes not counted), links not followed."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def copy_capped(source: Path, target: Path, max_bytes: int) -> str | None:
    """Copy the regular file `source` (never through a link) to `target`, keeping its holes;
    None when copied, else why not. A file over `max_bytes` (its apparent size) is refused
    before anything is read."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"{source.name} was not written"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"{source.name} is a symbolic link; write the file itself"
        return f"{source.name} cannot be read ({error.strerror}); it must be a regular file"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return f"{source.name} is not a regular file"
        if info.st_size > max_bytes:
            return (
                f"{source.name} is {info.st_size / 1e6:,.0f} MB, more than the limit of "
                f"{max_bytes / 1e6:,.0f} MB for it; it was not copied out"
            )
        target.unlink(missing_ok=True)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _copy_data(fd, out, info.st_size)
        finally:
            os.close(out)
    except OSError as error:
        target.unlink(missing_ok=True)
        return f"{source.name} could not be copied out ({error.strerror or error})"
    finally:
        os.close(fd)
    return None


def place_file(source: Path, target: Path) -> None:
    """Put a copy of `source` at `target`: a hard link where both are on one file system (no
    second copy of a large file), else a copy that keeps its holes."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _copy_data(fd, out, os.fstat(fd).st_size)
            finally:
                os.close(out)
        finally:
            os.close(fd)


def _copy_data(fd: int, out: int, size: int) -> None:
    """Copy the data regions of `fd` to `out` at the same offsets; holes and all-zero chunks
    stay holes (the file is then cut to `size`)."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError as error:
            if error.errno == errno.ENXIO:  # only a hole is left
                break
            start, end = offset, size  # no SEEK_DATA on this file system: read it all
        while start < end:
            chunk = os.pread(fd, min(_CHUNK, end - start), start)
            if not chunk:
                break
            if chunk.count(0) != len(chunk):
                os.pwrite(out, chunk, start)
            start += len(chunk)
        offset = max(end, offset + 1)
    os.ftruncate(out, size)


def _engine_shares_mounts() -> bool:
    """Whether the local Docker engine sees mounts made here (same mount namespace); True when
    that cannot be told."""
    for pid_file in _DOCKERD_PID_FILES:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    return True


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount_tmpfs(path: Path, size_bytes: int) -> str | None:
    """Mount a tmpfs of `size_bytes` at `path`; None, or why it could not be."""
    options = f"size={max(size_bytes, 1 << 20)},mode=1777".encode()
    # Named as Docker names its own: the container sees the name in /proc/mounts.
    result = _libc().mount(b"tmpfs", bytes(path), b"tmpfs", _MS_NOSUID | _MS_NODEV, options)
    if result != 0:
        return f"mounting a tmpfs failed: {os.strerror(ctypes.get_errno())}"
    return None


def _unmount(path: Path) -> None:
    # Detached: a process still holding a file in it cannot keep it mounted here.
    _libc().umount2(bytes(path), _MNT_DETACH)

"""Edges of taking submissions in: limits at their exact value, what an archive may name, folder
entries, top folders, and the private copy's modes, times and races. Expectations follow the
module's contract (nothing unpacked or copied past a limit; "more than N" refuses N + 1, never N;
a copy keeps modes and times; a refusal names the entry and the rule) and are worked out by hand.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

from grader.domain import intake
from grader.domain.intake import (
    ArchiveLimits,
    ArchiveRefused,
    IntakeRefused,
    stage,
    take_in,
    unpack,
)

NO_RATIO = 1e9  # a ratio limit that never applies


def _zip(path: Path, entries: dict[str, bytes | None]) -> Path:
    """A zip whose entries are files (bytes) or folder entries (None, name ending in /)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            if data is None:
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, data)
    return path


def _tar(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """A tar.gz of (name, type) members, empty."""
    with tarfile.open(path, "w:gz") as archive:
        for name, kind in entries:
            member = tarfile.TarInfo(name)
            member.type = kind
            archive.addfile(member)
    return path


def _refusal(archive: Path, into: Path, limits: ArchiveLimits | None = None) -> str:
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, into, limits or ArchiveLimits())
    assert not into.exists() or not any(p for p in into.iterdir() if not p.name.startswith("."))
    return str(error.value)


# --- archives: limits at their exact value -------------------------------------------------------


def test_exactly_the_file_limit_is_unpacked_and_one_more_is_refused(tmp_path):
    limits = ArchiveLimits(max_files=3, max_ratio=NO_RATIO)
    three = _zip(tmp_path / "three.zip", {"a/1": b"x", "a/2": b"x", "a/3": b"x"})
    assert sorted(p.name for p in unpack(three, tmp_path / "i", limits).iterdir()) == [
        "1",
        "2",
        "3",
    ]
    four = _zip(tmp_path / "four.zip", {f"a/{n}": b"x" for n in range(4)})
    assert _refusal(four, tmp_path / "j", limits).endswith(": 4 files, more than 3")


def test_folders_are_counted_apart_from_files(tmp_path):
    # 3 files and 3 folders: each within a limit of 3
    limits = ArchiveLimits(max_files=3, max_ratio=NO_RATIO)
    entries: dict[str, bytes | None] = {"a/": None, "a/b/": None, "a/c/": None}
    entries.update({"a/b/1": b"x", "a/b/2": b"x", "a/c/3": b"x"})
    folder = unpack(_zip(tmp_path / "six.zip", entries), tmp_path / "i", limits)
    assert sorted(p.name for p in folder.iterdir()) == ["b", "c"]
    entries["a/d/"] = None  # a 4th folder
    message = _refusal(_zip(tmp_path / "seven.zip", entries), tmp_path / "j", limits)
    assert message.endswith(": 4 folders, more than 3")


def test_the_sizes_of_all_files_add_up_and_exactly_the_limit_is_unpacked(tmp_path):
    limits = ArchiveLimits(max_bytes=1_500_000, max_ratio=NO_RATIO)
    exact = _zip(tmp_path / "exact.zip", {"a/1": b"x" * 750_000, "a/2": b"y" * 750_000})
    assert (unpack(exact, tmp_path / "i", limits) / "2").stat().st_size == 750_000
    over = _zip(tmp_path / "over.zip", {"a/1": b"x" * 1_000_000, "a/2": b"y" * 2_500_000})
    # 3.5 MB and 1.5 MB, rounded to whole MB
    assert _refusal(over, tmp_path / "j", limits).endswith(": 4 MB unpacked, more than 2 MB")


def test_empty_files_take_no_bytes(tmp_path):
    empty = _zip(tmp_path / "empty.zip", {"a/1": b"", "a/2": b""})
    assert unpack(empty, tmp_path / "i", ArchiveLimits(max_bytes=0)).name == "a"


def test_exactly_the_ratio_limit_is_unpacked(tmp_path):
    archive = _zip(tmp_path / "r.zip", {"a/f": b"z" * 100_000})
    ratio = 100_000 / archive.stat().st_size
    assert unpack(archive, tmp_path / "i", ArchiveLimits(max_ratio=ratio)).name == "a"
    assert "times its size" in _refusal(
        archive, tmp_path / "j", ArchiveLimits(max_ratio=ratio * 0.99)
    )


# --- archives: what an entry may name ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("C:/Windows/x", "has an absolute path"),  # a drive letter
        ("c:x", "has an absolute path"),
        ("\\evil\\x", "has an absolute path"),
        ("a\\..\\..\\evil", "leaves the submission folder"),
    ],
)
def test_windows_paths_are_refused(tmp_path, name, rule):
    archive = _zip(tmp_path / "w.zip", {name: b"x"})
    assert _refusal(archive, tmp_path / "i") == (
        f"w.zip: refused, nothing was unpacked: entry {name!r} {rule}"
    )


def test_a_colon_further_down_a_path_is_a_plain_name(tmp_path):
    archive = _zip(tmp_path / "c.zip", {"a/notes:v2.txt": b"x"})
    assert (unpack(archive, tmp_path / "i") / "notes:v2.txt").read_bytes() == b"x"


def test_a_top_folder_entry_does_not_end_the_checks(tmp_path):
    archive = _tar(tmp_path / "dot.tar.gz", [("./", tarfile.DIRTYPE), ("../evil", tarfile.REGTYPE)])
    assert "entry '../evil' leaves the submission folder" in _refusal(archive, tmp_path / "i")
    assert not (tmp_path / "evil").exists()


def test_an_unknown_tar_member_type_is_refused_as_a_special_file(tmp_path):
    archive = _tar(tmp_path / "v.tar.gz", [("volume", b"V")])
    assert _refusal(archive, tmp_path / "i").endswith(
        "entry 'volume' is a special file; hand in regular files only"
    )


def test_a_name_too_deep_is_shown_cut_to_200_characters(tmp_path):
    name = "folder/" * 70 + "f"
    limits = ArchiveLimits(max_ratio=NO_RATIO)
    message = _refusal(_zip(tmp_path / "d.zip", {name: b"x"}), tmp_path / "i", limits)
    assert f"entry {name[:200]!r}... is more than 64 folders deep" in message


# --- archives: folder entries and the top folder -------------------------------------------------


def test_folder_entries_of_a_zip_are_made_even_when_empty(tmp_path):
    archive = _zip(
        tmp_path / "f.zip", {"a/": None, "a/empty/": None, "a/train/": None, "a/train/D": b"x"}
    )
    folder = unpack(archive, tmp_path / "i")
    assert folder.name == "a"
    assert (folder / "empty").is_dir() and not list((folder / "empty").iterdir())
    assert (folder / "train" / "D").read_bytes() == b"x"


def test_folder_entries_may_come_before_their_parents_and_twice(tmp_path):
    archive = _tar(
        tmp_path / "t.tar.gz",
        [("a/b/c/", tarfile.DIRTYPE), ("a/", tarfile.DIRTYPE), ("a/b/c/", tarfile.DIRTYPE)],
    )
    folder = unpack(archive, tmp_path / "i")
    assert folder.name == "a" and (folder / "b" / "c").is_dir()


def test_macos_metadata_beside_the_one_folder_is_passed_over(tmp_path):
    archive = _zip(
        tmp_path / "mac.zip",
        {"alice/train/Dockerfile": b"FROM x\n", "__MACOSX/alice/._Dockerfile": b"meta"},
    )
    assert unpack(archive, tmp_path / "i").name == "alice"


def test_two_top_folders_are_the_submission_together(tmp_path):
    archive = _zip(tmp_path / "two.zip", {"one/x.py": b"1", "two/y.py": b"2"})
    folder = unpack(archive, tmp_path / "i")
    assert sorted(p.name for p in folder.iterdir()) == ["one", "two"]


def test_one_top_file_is_not_a_folder_to_descend_into(tmp_path):
    archive = _zip(tmp_path / "one.zip", {"notes.txt": b"1"})
    folder = unpack(archive, tmp_path / "i")
    assert (folder / "notes.txt").read_bytes() == b"1"


def test_a_new_archive_under_the_same_name_is_unpacked_anew(tmp_path):
    archive = _zip(tmp_path / "alice.zip", {"alice/v": b"first"})
    first = unpack(archive, tmp_path / "i")
    _zip(archive, {"alice/v": b"second"})
    second = unpack(archive, tmp_path / "i")
    assert second != first
    assert (first / "v").read_bytes() == b"first" and (second / "v").read_bytes() == b"second"


def test_unpacked_files_are_readable_by_all_and_executable_by_none(tmp_path):
    archive = _zip(tmp_path / "m.zip", {"a/start.sh": b"#!/bin/sh\n"})
    mode = stat.S_IMODE((unpack(archive, tmp_path / "i") / "start.sh").stat().st_mode)
    assert mode & 0o444 == 0o444 and mode & 0o111 == 0 and mode & 0o022 == 0


def test_an_archive_it_cannot_unpack_names_the_error_type(tmp_path):
    archive = _zip(tmp_path / "locked.zip", {"a/train/Dockerfile": b"FROM x\n"})
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the "encrypted" bits
        data[data.index(signature) + offset] |= 1
    archive.write_bytes(bytes(data))
    # zipfile raises RuntimeError for an encrypted entry read without a password
    assert "(RuntimeError: " in _refusal(archive, tmp_path / "i")


# --- taking in: limits reach both the archive and the copy ---------------------------------------


def test_take_in_applies_its_limits_to_an_archive(tmp_path):
    archive = _zip(tmp_path / "alice.zip", {f"alice/{n}": b"x" for n in range(3)})
    with pytest.raises(ArchiveRefused, match="3 files, more than 2"):
        take_in(archive, tmp_path / "u", tmp_path / "s", ArchiveLimits(max_files=2))


def test_take_in_applies_its_limits_to_a_folder(tmp_path):
    (tmp_path / "alice").mkdir()
    for n in range(3):
        (tmp_path / "alice" / str(n)).write_text("x")
    with pytest.raises(IntakeRefused, match="more than 2 files, folders and links"):
        take_in(tmp_path / "alice", tmp_path / "u", tmp_path / "s", ArchiveLimits(max_files=2))


def test_an_archive_of_loose_files_is_named_by_itself(tmp_path):
    archive = _zip(tmp_path / "dave.tar.zip", {"train/Dockerfile": b"FROM x\n"})
    folder, name = take_in(archive, tmp_path / "u", tmp_path / "s")
    assert name == "dave.tar" and (folder / "train" / "Dockerfile").is_file()


# --- the private copy ----------------------------------------------------------------------------


def _tree(root: Path, files: int = 0) -> Path:
    root.mkdir(parents=True)
    for n in range(files):
        (root / f"f{n}").write_bytes(b"x")
    return root


def test_two_folders_get_copies_of_their_own(tmp_path):
    (_tree(tmp_path / "one" / "alice") / "who").write_text("first alice")
    (_tree(tmp_path / "two" / "alice") / "who").write_text("second alice")
    first = stage(tmp_path / "one" / "alice", tmp_path / "run")
    second = stage(tmp_path / "two" / "alice", tmp_path / "run")
    assert first != second
    assert (first / "who").read_text() == "first alice"
    assert (second / "who").read_text() == "second alice"


def test_the_copy_is_private_to_its_owner(tmp_path):
    source = _tree(tmp_path / "alice", 1)
    source.chmod(0o755)
    copy = stage(source, tmp_path / "run")
    assert stat.S_IMODE(copy.stat().st_mode) & 0o077 == 0


def test_inner_folders_keep_their_modes_and_times(tmp_path):
    source = _tree(tmp_path / "alice")
    inner = source / "models"
    inner.mkdir()
    (inner / "m.pt").write_bytes(b"w")
    os.utime(inner / "m.pt", (1_000_000_000, 1_000_000_000))
    inner.chmod(0o750)
    os.utime(inner, (1_100_000_000, 1_100_000_000))
    copy = stage(source, tmp_path / "run")
    assert stat.S_IMODE((copy / "models").stat().st_mode) == 0o750
    assert (copy / "models").stat().st_mtime == 1_100_000_000
    assert (copy / "models" / "m.pt").stat().st_mtime == 1_000_000_000


def test_exactly_the_file_limit_is_copied_and_one_more_is_refused(tmp_path):
    limits = ArchiveLimits(max_files=3)
    assert stage(_tree(tmp_path / "three", 3), tmp_path / "run", limits).is_dir()
    with pytest.raises(IntakeRefused, match="more than 3 files"):
        stage(_tree(tmp_path / "four", 4), tmp_path / "run", limits)


def test_the_bytes_of_all_files_add_up_and_exactly_the_limit_is_copied(tmp_path):
    limits = ArchiveLimits(max_bytes=1_500_000)
    exact = _tree(tmp_path / "exact")
    (exact / "a").write_bytes(b"x" * 750_000)
    (exact / "b").write_bytes(b"y" * 750_000)
    assert (stage(exact, tmp_path / "run", limits) / "b").stat().st_size == 750_000
    over = _tree(tmp_path / "over")
    (over / "a").write_bytes(b"x" * 750_000)
    (over / "b").write_bytes(b"y" * 750_001)
    with pytest.raises(IntakeRefused) as error:
        stage(over, tmp_path / "run", limits)
    assert "refused, not copied: more than 2 MB" in str(error.value)  # 1.5 MB, rounded


def test_the_bytes_of_three_files_add_up(tmp_path):
    source = _tree(tmp_path / "three")
    for name in "abc":
        (source / name).write_bytes(b"x" * 600_000)  # 1.8 MB in all
    with pytest.raises(IntakeRefused, match="more than 2 MB"):
        stage(source, tmp_path / "run", ArchiveLimits(max_bytes=1_500_000))


def test_files_after_a_pipe_are_still_copied(tmp_path):
    source = _tree(tmp_path / "alice")
    os.mkfifo(source / "a-pipe")
    (source / "b.txt").write_text("after the pipe")
    copy = stage(source, tmp_path / "run")
    assert (copy / "b.txt").read_text() == "after the pipe"
    assert not (copy / "a-pipe").exists()


def test_a_copy_removed_meanwhile_is_made_again(tmp_path):
    source = _tree(tmp_path / "alice", 1)
    copy = stage(source, tmp_path / "run")
    shutil.rmtree(copy)
    assert stage(source, tmp_path / "run") == copy and (copy / "f0").is_file()


def test_a_copy_a_parallel_worker_made_meanwhile_is_used(tmp_path, monkeypatch):
    source = _tree(tmp_path / "alice", 1)
    real_copy_tree = intake.copy_tree
    raced: list[Path] = []

    def copy_while_another_worker_finishes(source: Path, target: Path, limits) -> None:
        real_copy_tree(source, target, limits)
        if not raced:  # the other worker's whole stage() ends before this copy is moved in place
            raced.append(tmp_path)
            raced.append(stage(source, tmp_path / "run"))

    monkeypatch.setattr(intake, "copy_tree", copy_while_another_worker_finishes)
    copy = stage(source, tmp_path / "run")
    assert copy == raced[1] and (copy / "f0").is_file()


@pytest.fixture
def other_filesystem():
    """A folder on another filesystem than the system's temporary folder, if the host has one."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("no second filesystem to stage into")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


def test_copies_and_unpacking_work_on_any_filesystem(tmp_path, other_filesystem):
    source = _tree(tmp_path / "alice", 1)
    assert (stage(source, other_filesystem / "run") / "f0").is_file()
    archive = _zip(tmp_path / "bob.zip", {"bob/f": b"x"})
    assert (unpack(archive, other_filesystem / "unpacked") / "f").is_file()


# --- one file swapped after it was listed --------------------------------------------------------


def test_a_file_swapped_for_a_link_is_not_followed(tmp_path):
    (tmp_path / "secret").write_text("host secret")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(OSError):
        intake._copy_file(tmp_path / "link", tmp_path / "copy", 10**6)
    assert not (tmp_path / "copy").exists()


def test_a_file_swapped_for_a_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opening the pipe blocked"))
    signal.alarm(5)
    try:
        with pytest.raises(OSError) as error:
            intake._copy_file(tmp_path / "pipe", tmp_path / "copy", 10**6)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert (error.value.strerror, error.value.filename) == (
        "not a regular file",
        str(tmp_path / "pipe"),
    )


def test_a_copied_file_keeps_its_times(tmp_path):
    source = _tree(tmp_path / "alice")
    (source / "f").write_text("x")
    os.utime(source / "f", ns=(1_000_000_000_123_456_789, 1_200_000_000_987_654_321))
    copied = stage(source, tmp_path / "run") / "f"
    assert copied.stat().st_mtime_ns == 1_200_000_000_987_654_321

"""Archives handed in: unpacked when safe, refused with the entry and the rule otherwise."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from grader.intake import ArchiveLimits, ArchiveRefused, unpack
from grader.submission import discover


def _zip(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            content = (data or {}).get(member.name)
            if content is not None:
                member.size = len(content)
            archive.addfile(member, io.BytesIO(content) if content is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    return member


SUBMISSION = {"alice/train/Dockerfile": b"FROM x\n", "alice/submission.toml": b"[student]\n"}


def test_a_zip_with_one_folder_unpacks_to_that_folder(tmp_path):
    archive = _zip(tmp_path / "alice.zip", SUBMISSION)
    folder = unpack(archive, tmp_path / "intake")
    assert folder.name == "alice" and (folder / "train" / "Dockerfile").read_bytes() == b"FROM x\n"
    assert unpack(archive, tmp_path / "intake") == folder  # once per content
    assert not list((tmp_path / "intake").glob(".unpacking-*"))


def test_a_tar_gz_at_the_top_level_unpacks_in_place(tmp_path):
    archive = _tar(
        tmp_path / "bob.tar.gz", [_member("train/Dockerfile"), _member("serve/x.py")],
        {"train/Dockerfile": b"FROM y\n", "serve/x.py": b"print(1)\n"},
    )  # fmt: skip
    folder = unpack(archive, tmp_path / "intake")
    assert folder.name.startswith("bob-") and (folder / "serve" / "x.py").is_file()


def test_archives_are_found_next_to_folders(tmp_path):
    (tmp_path / "carol" / "train").mkdir(parents=True)
    _zip(tmp_path / "alice.zip", SUBMISSION)
    (tmp_path / "notes.txt").write_text("not a submission")
    assert [p.name for p in discover([tmp_path])] == ["alice.zip", "carol"]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            [_member("../../etc/cron.d/x")],
            "entry '../../etc/cron.d/x' leaves the submission folder",
        ),
        ([_member("a/../../x")], "entry 'a/../../x' leaves the submission folder"),
        ([_member("/etc/passwd")], "entry '/etc/passwd' has an absolute path"),
        ([_member("p", tarfile.SYMTYPE, "/etc/passwd")], "entry 'p' is a symbolic link; hand in"),
        ([_member("h", tarfile.LNKTYPE, "x")], "entry 'h' is a hard link; hand in regular"),
        ([_member("dev", tarfile.CHRTYPE)], "entry 'dev' is a device file; hand in regular"),
        ([_member("fifo", tarfile.FIFOTYPE)], "entry 'fifo' is a named pipe; hand in regular"),
    ],
)
def test_dangerous_tar_entries_are_refused(tmp_path, members, message):
    archive = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, tmp_path / "intake")
    assert str(error.value).startswith("evil.tar.gz: refused, nothing was unpacked: ")
    assert message in str(error.value)
    assert not (tmp_path / "intake").exists()


def test_a_symlink_in_a_zip_is_refused(tmp_path):
    archive = _zip(tmp_path / "link.zip", {"a/train/Dockerfile": b"x"}, {"a/p": "/etc/passwd"})
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, tmp_path / "intake")
    assert str(error.value) == (
        "link.zip: refused, nothing was unpacked: entry 'a/p' is a symbolic link; "
        "hand in regular files only"
    )


def test_a_special_file_in_a_zip_is_refused(tmp_path):
    archive = tmp_path / "pipe.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        info = zipfile.ZipInfo("a/pipe")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        handle.writestr(info, b"")
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, tmp_path / "intake")
    assert "entry 'a/pipe' is a special file; hand in regular files only" in str(error.value)


def test_limits_on_files_bytes_and_ratio(tmp_path):
    many = _zip(tmp_path / "many.zip", {f"f{i}": b"x" for i in range(12)})
    with pytest.raises(ArchiveRefused) as error:
        unpack(many, tmp_path / "i", ArchiveLimits(max_files=10))
    assert str(error.value).endswith(": 12 files, more than 10")
    big = _zip(tmp_path / "big.zip", {"f": b"x" * 3_000_000})
    with pytest.raises(ArchiveRefused) as error:
        unpack(big, tmp_path / "i", ArchiveLimits(max_bytes=2_000_000, max_ratio=1e9))
    assert str(error.value).endswith(": 3 MB unpacked, more than 2 MB")
    with pytest.raises(ArchiveRefused) as error:
        unpack(big, tmp_path / "i")
    assert "times its size (at most 200); this looks like an archive bomb" in str(error.value)


def test_a_damaged_archive_is_refused(tmp_path):
    damaged = tmp_path / "half.zip"
    damaged.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ArchiveRefused) as error:
        unpack(damaged, tmp_path / "i")
    assert str(error.value).startswith("half.zip: not a readable archive (")

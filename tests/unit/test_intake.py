"""Archives handed in: unpacked when safe, refused with the entry and the rule otherwise."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from grader.domain.intake import ArchiveLimits, ArchiveRefused, IntakeRefused, stage, unpack
from grader.domain.reasons import Failure
from grader.domain.submission import discover, slugify
from grader.stages.serving import ServeContext, serve_context


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


# --- archives: names that are not plain paths ----------------------------------------------------


def test_a_tar_of_dot_unpacks_like_its_folder(tmp_path):
    # what `tar -C alice -czf alice.tar.gz .` writes: `./`, `./train/`, `./train/Dockerfile`
    archive = _tar(
        tmp_path / "alice.tar.gz",
        [_member(".", tarfile.DIRTYPE), _member("./train", tarfile.DIRTYPE),
         _member("./train/Dockerfile"), _member("./submission.toml")],
        {"./train/Dockerfile": b"FROM x\n", "./submission.toml": b""},
    )  # fmt: skip
    folder = unpack(archive, tmp_path / "intake")
    assert (folder / "train" / "Dockerfile").read_bytes() == b"FROM x\n"
    assert sorted(p.name for p in folder.iterdir()) == ["submission.toml", "train"]


def test_duplicate_entries_keep_the_last_as_tar_does(tmp_path):
    archive = tmp_path / "twice.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        for number, name in enumerate(["a/f", "a//f", "a/./f"]):
            data = f"version {number}".encode()
            member = _member(name)
            member.size = len(data)
            handle.addfile(member, io.BytesIO(data))
    folder = unpack(archive, tmp_path / "intake")
    assert (folder / "f").read_text() == "version 2"


def _zip_nameless(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/train/Dockerfile", b"x")
        archive.writestr(zipfile.ZipInfo(""), b"x")  # an entry without a name
    return path


@pytest.mark.parametrize(
    ("make_archive", "message"),
    [
        (
            lambda path: _zip_nameless(path / "empty.zip"),
            "entry '' is a file without a name",
        ),
        (
            lambda path: _zip(path / "clash.zip", {"a/train": b"x", "a/train/Dockerfile": b"y"}),
            "entry 'a/train/Dockerfile' needs a folder 'a/train' where the archive has a file",
        ),
        (
            lambda path: _tar(
                path / "clash.tar.gz",
                [_member("a/train", tarfile.DIRTYPE), _member("a/train")],
            ),
            "'a/train' is both a file and a folder in it",
        ),
        (
            lambda path: _tar(path / "clash.tar.gz", [_member("./x"), _member("x/y")]),
            "entry 'x/y' needs a folder 'x' where the archive has a file",
        ),
    ],
)
def test_nameless_and_clashing_entries_are_refused(tmp_path, make_archive, message):
    archive = make_archive(tmp_path)
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, tmp_path / "intake")
    assert str(error.value).startswith(f"{archive.name}: refused, nothing was unpacked: ")
    assert message in str(error.value)
    assert not (tmp_path / "intake").exists()


def test_an_encrypted_zip_is_refused(tmp_path):
    archive = _zip(tmp_path / "locked.zip", {"a/train/Dockerfile": b"FROM x\n"})
    data = bytearray(archive.read_bytes())
    # set the "encrypted" flag of the entry in both headers
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + offset
        data[at] |= 1
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, tmp_path / "intake")
    assert str(error.value).startswith("locked.zip: refused, it could not be unpacked (")
    assert "encrypted" in str(error.value)


def test_too_many_folders_are_refused(tmp_path):
    archive = _tar(tmp_path / "deep.tar.gz", [_member(f"d{i}/", tarfile.DIRTYPE) for i in range(5)])
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, tmp_path / "i", ArchiveLimits(max_files=3))
    assert str(error.value).endswith(": 5 folders, more than 3")


# --- folders: a private copy ---------------------------------------------------------------------


def _folder(tmp_path: Path) -> tuple[Path, Path]:
    """A hand-in with links of every kind, and a host folder next to it."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret")
    root = tmp_path / "alice"
    (root / "serve" / "models").mkdir(parents=True)
    (root / "serve" / "Dockerfile").write_text("FROM x\n")
    (root / "serve" / "start.sh").write_text("#!/bin/sh\n")
    (root / "serve" / "start.sh").chmod(0o755)
    (root / "serve" / "models" / "m.pt").write_bytes(b"weights")
    (root / "serve" / "out").symlink_to(host)  # absolute, out of the submission
    (root / "serve" / "up").symlink_to("../../host/secret")  # relative, out of it
    (root / "serve" / "weights").symlink_to("models/m.pt")  # inside
    (root / "serve" / "shared").symlink_to("../train")  # inside, out of the serve folder
    (root / "train").mkdir()
    (root / "train" / "back").symlink_to("../serve/out")  # out, through another link
    (root / "train" / "loop").symlink_to("loop")
    return root, host


def test_a_private_copy_keeps_files_modes_and_inner_links(tmp_path):
    root, _ = _folder(tmp_path)
    copy = stage(root, tmp_path / "run" / "intake")
    assert copy.parent.parent == tmp_path / "run" / "intake" and copy.name == "alice"
    assert (copy / "serve" / "Dockerfile").read_text() == "FROM x\n"
    assert (copy / "serve" / "start.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(copy / "serve" / "weights") == "models/m.pt"
    assert (copy / "serve" / "weights").read_bytes() == b"weights"
    assert os.readlink(copy / "serve" / "shared") == "../train"
    assert (tmp_path / "run" / "intake").stat().st_mode & 0o777 == 0o700
    assert stage(root, tmp_path / "run" / "intake") == copy  # once per run
    assert not list((tmp_path / "run" / "intake").glob(".staging-*"))


def test_links_out_of_the_submission_lead_nowhere_in_the_copy(tmp_path):
    root, host = _folder(tmp_path)
    copy = stage(root, tmp_path / "run" / "intake")
    for link in ("serve/out", "serve/up", "train/back"):
        assert (copy / link).is_symlink(), link
        assert not (copy / link).exists(), link
        assert not Path(os.path.realpath(copy / link)).is_relative_to(host)
    with pytest.raises(OSError):
        (copy / "serve" / "out" / "owned.pt").write_bytes(b"x")
    assert sorted(p.name for p in host.iterdir()) == ["secret"]
    assert os.readlink(copy / "train" / "loop") == "loop"


def test_pipes_are_left_out_and_nothing_blocks(tmp_path):
    root, _ = _folder(tmp_path)
    os.mkfifo(root / "serve" / "pipe")
    copy = stage(root, tmp_path / "run")
    assert not (copy / "serve" / "pipe").exists()


def test_set_id_bits_are_dropped(tmp_path):
    root, _ = _folder(tmp_path)
    (root / "serve" / "start.sh").chmod(0o4755)
    copy = stage(root, tmp_path / "run")
    assert (copy / "serve" / "start.sh").stat().st_mode & 0o7777 == 0o755


def test_a_folder_over_the_limits_is_refused(tmp_path):
    root, _ = _folder(tmp_path)
    with pytest.raises(IntakeRefused) as error:
        stage(root, tmp_path / "run", ArchiveLimits(max_files=4))
    assert str(error.value) == (
        "alice/: refused, not copied: more than 4 files, folders and links; leave virtualenvs, "
        "datasets and checkpoints out"
    )
    with pytest.raises(IntakeRefused) as again:  # a second look, a parallel worker's, is told so
        stage(root, tmp_path / "run")
    assert str(again.value) == str(error.value)
    (root / "serve" / "big.bin").write_bytes(b"x" * 3_000_000)
    with pytest.raises(IntakeRefused) as error:
        stage(root, tmp_path / "run2", ArchiveLimits(max_bytes=2_000_000))
    assert str(error.value).startswith(
        "alice/: refused, not copied: more than 2 MB; leave datasets"
    )
    left = sorted(p.name for p in (tmp_path / "run2").iterdir())
    assert len(left) == 1 and left[0].endswith(".refused")  # no copy, half or whole


def test_an_unreadable_file_refuses_the_folder_with_its_name(tmp_path):
    root, _ = _folder(tmp_path)
    target = root / "serve" / "Dockerfile"
    with pytest.MonkeyPatch.context() as patch:
        real_open = os.open

        def failing_open(path, flags, *args, **kwargs):
            if str(path) == str(target):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        patch.setattr(os, "open", failing_open)
        with pytest.raises(IntakeRefused) as error:
            stage(root, tmp_path / "run")
    assert str(error.value) == f"alice/: refused, not copied: Permission denied ({target})"


def test_a_folder_too_deep_for_tools_is_refused(tmp_path):
    root = tmp_path / "deep"
    path = root
    root.mkdir()
    for _ in range(70):
        path = path / "d"
        os.mkdir(path)
    (path / "f").write_text("bottom")
    with pytest.raises(IntakeRefused) as error:
        stage(root, tmp_path / "run")
    assert str(error.value) == (
        f"deep/: refused, not copied: {'d/' * 64} holds folders more than 64 deep"
    )
    assert stage(root, tmp_path / "run2", ArchiveLimits(max_depth=70)).is_dir()


def test_an_archive_too_deep_is_refused(tmp_path):
    archive = _zip(tmp_path / "deep.zip", {"a/" * 70 + "f": b"x"})
    with pytest.raises(ArchiveRefused) as error:
        unpack(archive, tmp_path / "i")
    assert "is more than 64 folders deep" in str(error.value)


# --- the serve context: the model is placed into real folders only -------------------------------


def test_the_model_is_never_written_through_a_link_out(tmp_path):
    root, host = _folder(tmp_path)
    copy = stage(root, tmp_path / "run")
    model = tmp_path / "trained.pt"
    model.write_bytes(b"trained")
    prepared = serve_context(
        copy / "serve", "out/owned.pt", model, tmp_path / "run" / "serve-context"
    )
    assert isinstance(prepared, Failure)
    assert prepared.message == (
        "serve.model_path out/owned.pt: out is a link that leads out of the serve context; the "
        "grader writes the model only into folders of the context itself"
    )
    assert sorted(p.name for p in host.iterdir()) == ["secret"]


def test_a_link_that_leaves_only_the_serve_context_leads_nowhere_in_its_copy(tmp_path):
    root, _ = _folder(tmp_path)
    copy = stage(root, tmp_path / "run")
    model = tmp_path / "trained.pt"
    model.write_bytes(b"trained")
    scratch = tmp_path / "run" / "serve-context"
    prepared = serve_context(copy / "serve", "shared/m.pt", model, scratch)
    assert isinstance(prepared, Failure)
    assert "shared is a link that leads out of the serve context" in prepared.message
    assert not (copy / "train" / "m.pt").exists()


def test_the_model_goes_through_links_inside_the_context(tmp_path):
    root, _ = _folder(tmp_path)
    (root / "serve" / "store").symlink_to("models")
    copy = stage(root, tmp_path / "run")
    model = tmp_path / "trained.pt"
    model.write_bytes(b"trained")
    scratch = tmp_path / "run" / "serve-context"
    prepared = serve_context(copy / "serve", "store/new/m.pt", model, scratch)
    assert prepared == ServeContext(scratch, model_origin="trained")
    assert (scratch / "models" / "new" / "m.pt").read_bytes() == b"trained"
    assert not (copy / "serve" / "models" / "new").exists()  # the staged copy stays as it was


def test_a_trained_model_replaces_a_link_at_the_model_path(tmp_path):
    root, host = _folder(tmp_path)
    (root / "serve" / "mnist_cnn.pt").symlink_to(host / "secret")
    copy = stage(root, tmp_path / "run")
    model = tmp_path / "trained.pt"
    model.write_bytes(b"trained")
    scratch = tmp_path / "run" / "serve-context"
    prepared = serve_context(copy / "serve", "mnist_cnn.pt", model, scratch)
    assert prepared == ServeContext(scratch, model_origin="trained")
    assert not (scratch / "mnist_cnn.pt").is_symlink()
    assert (scratch / "mnist_cnn.pt").read_bytes() == b"trained"
    assert (host / "secret").read_text() == "host secret"


def test_a_committed_model_counts_only_as_a_regular_file(tmp_path):
    root, _ = _folder(tmp_path)
    copy = stage(root, tmp_path / "run")
    scratch = tmp_path / "run" / "serve-context"
    assert serve_context(copy / "serve", "models/m.pt", None, scratch) == ServeContext(
        scratch, model_origin="committed"
    )
    absent = serve_context(copy / "serve", "weights", None, scratch)
    assert isinstance(absent, Failure)
    assert absent.message.startswith("there is no model to serve")
    folder = serve_context(copy / "serve", "models", None, scratch)
    assert isinstance(folder, Failure)
    assert folder.message == "serve.model_path models is a folder in serve/; name the model file"
    under_a_file = serve_context(copy / "serve", "Dockerfile/m.pt", None, scratch)
    assert isinstance(under_a_file, Failure)
    assert under_a_file.message == (
        "serve.model_path Dockerfile/m.pt: Dockerfile is a file where a folder is needed"
    )


# --- a batch taken in: private copies, unique ids, claims flagged ---------------------------------


def _hand_in(batch: Path, name: str, manifest: str | None = None) -> Path:
    folder = batch / name
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "Dockerfile").write_text("FROM x\n")
    if manifest is not None:
        (folder / "submission.toml").write_text(manifest)
    return folder


def _take_in_batch(tmp_path: Path, batch: Path) -> list:
    from grader.domain.handins import take_in_all

    staging = tmp_path / "run" / ".intake"
    return take_in_all(discover([batch]), tmp_path / "reports" / "intake", staging)


def test_every_folder_is_graded_from_its_private_copy(tmp_path):
    original = _hand_in(tmp_path / "batch", "alice")
    (intake,) = _take_in_batch(tmp_path, tmp_path / "batch")
    assert intake.id == "alice" and intake.source == original
    assert intake.path.is_relative_to(tmp_path / "run" / ".intake")
    assert intake.submission.root == intake.path
    assert intake.submission.train.dockerfile == intake.path / "train" / "Dockerfile"


def test_ids_differing_by_case_or_punctuation_get_apart(tmp_path):
    batch = tmp_path / "batch"
    for name in ("Bob", "bob", "a.b", "a-b"):
        _hand_in(batch, name)
    intakes = {intake.source.name: intake for intake in _take_in_batch(tmp_path, batch)}
    ids = {name: intake.id for name, intake in intakes.items()}
    assert ids == {"Bob": "Bob", "bob": "bob (bob)", "a-b": "a-b", "a.b": "a.b (a.b)"}
    assert len({slugify(i) for i in ids.values()}) == 4
    for intake in intakes.values():
        assert intake.submission.id == intake.id and not intake.flags
    assert intakes["bob"].notes == (
        "graded as 'bob (bob)': 'bob' and the earlier submission 'Bob' would share the name "
        "'bob' of their artifacts, stored results and images",
    )
    assert intakes["Bob"].notes == ()


def test_a_claimed_student_id_flags_both_and_keeps_both(tmp_path):
    batch = tmp_path / "batch"
    alice = _hand_in(batch, "alice")
    mallory = _hand_in(batch, "mallory", '[student]\nid = "alice"\n')
    first, second = _take_in_batch(tmp_path, batch)
    assert (first.source, second.source) == (alice, mallory)
    assert (first.id, second.id) == ("alice", "alice (mallory)")
    assert first.submission.id != second.submission.id
    assert first.flags == (
        f"student id 'alice' is claimed by 2 submissions: this one ({alice}) and {mallory}; "
        "each was graded apart and nothing of one replaced the other's; check who handed in "
        "what",
    )
    assert second.flags[0].startswith(
        f"student id 'alice' is claimed by 2 submissions: this one ({mallory}) and {alice}"
    )


def test_one_bad_hand_in_stops_only_itself(tmp_path, monkeypatch):
    import grader.domain.handins

    batch = tmp_path / "batch"
    _hand_in(batch, "good")
    _hand_in(batch, "odd")
    _zip(batch / "nameless.zip", {"a/train/Dockerfile": b"x"})
    with zipfile.ZipFile(batch / "nameless.zip", "a") as handle:
        handle.writestr(zipfile.ZipInfo(""), b"x")
    real = grader.domain.handins.load_submission

    def load(folder, default_id=None):
        if default_id == "odd":
            raise RuntimeError("something unforeseen")
        return real(folder, default_id)

    monkeypatch.setattr(grader.domain.handins, "load_submission", load)
    intakes = {intake.id: intake for intake in _take_in_batch(tmp_path, batch)}
    assert intakes["good"].submission is not None
    assert str(intakes["odd"].problem) == (
        "odd: could not be taken in (RuntimeError: something unforeseen)"
    )
    assert str(intakes["nameless"].problem).startswith(
        "nameless.zip: refused, nothing was unpacked: entry '' is a file without a name"
    )


def test_archives_are_named_by_their_folder_or_themselves(tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    _zip(batch / "upload-1.zip", {"carol/train/Dockerfile": b"FROM x\n"})
    _zip(batch / "dave.zip", {"train/Dockerfile": b"FROM x\n"})
    ids = sorted(intake.id for intake in _take_in_batch(tmp_path, batch))
    assert ids == ["carol", "dave"]

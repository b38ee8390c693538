"""What leaves a training run is bounded: copy-out caps, sparse files, metrics.json, and the
parent cgroup of image builds (on a cgroup tree laid out in a temporary folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from grader.domain.accuracy import ReportedAccuracy, from_metrics
from grader.domain.errors import RubricError
from grader.domain.rubric import DEFAULT_RUBRIC, load_rubric
from grader.engine import outputs
from grader.engine.cgroups import LimitsReached, build_cgroup, leftover_cgroups, remove_cgroups_of
from grader.engine.outputs import OutputFolder, allocated_bytes, copy_capped, place_file

MB = 1_000_000


def _sparse(path: Path, size: int, data_at: dict[int, bytes]) -> Path:
    with open(path, "wb") as file:
        for offset, data in data_at.items():
            file.seek(offset)
            file.write(data)
        file.truncate(size)
    return path


def test_a_huge_sparse_model_is_refused_without_reading_it(tmp_path):
    source = _sparse(tmp_path / "mnist_cnn.pt", 3 << 30, {0: b"PK", 2 << 30: b"x"})
    problem = copy_capped(source, tmp_path / "copy.pt", 500 * MB)
    assert problem is not None
    assert "mnist_cnn.pt is 3,221 MB" in problem and "limit of 500 MB" in problem
    assert not (tmp_path / "copy.pt").exists()


def test_a_sparse_file_within_the_limit_keeps_its_holes(tmp_path):
    data = {0: b"head", 40 << 20: os.urandom(100_000), (96 << 20) - 4: b"tail"}
    source = _sparse(tmp_path / "model.pt", 96 << 20, data)
    assert copy_capped(source, tmp_path / "copy.pt", 500 * MB) is None
    copy = tmp_path / "copy.pt"
    assert copy.read_bytes() == source.read_bytes()
    assert copy.stat().st_blocks * 512 < 2 * MB  # not written out dense
    assert allocated_bytes(tmp_path) < 4 * MB


def test_an_ordinary_file_is_copied_whole(tmp_path):
    source = tmp_path / "m.pt"
    source.write_bytes(os.urandom(3 * MB) + bytes(MB) + b"end")
    assert copy_capped(source, tmp_path / "c.pt", 500 * MB) is None
    assert (tmp_path / "c.pt").read_bytes() == source.read_bytes()


def test_links_fifos_and_absent_files_are_not_copied(tmp_path):
    (tmp_path / "link.pt").symlink_to("/etc/passwd")
    os.mkfifo(tmp_path / "fifo.pt")  # opening it for reading must not hang
    (tmp_path / "dir.pt").mkdir()
    assert "link.pt is a symbolic link" in str(
        copy_capped(tmp_path / "link.pt", tmp_path / "a", MB)
    )
    assert "fifo.pt is not a regular file" in str(
        copy_capped(tmp_path / "fifo.pt", tmp_path / "b", MB)
    )
    assert "dir.pt is not a regular file" in str(
        copy_capped(tmp_path / "dir.pt", tmp_path / "c", MB)
    )
    assert "none.pt was not written" in str(copy_capped(tmp_path / "none.pt", tmp_path / "d", MB))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.pt", "fifo.pt", "link.pt"]


def test_placing_the_model_links_rather_than_copies(tmp_path):
    source = _sparse(tmp_path / "model.pt", 64 << 20, {0: b"weights"})
    target = tmp_path / "context" / "model.pt"
    target.parent.mkdir()
    target.write_text("committed weights")
    place_file(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert target.stat().st_ino == source.stat().st_ino


def test_a_deeply_nested_metrics_file_is_a_clear_problem(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    problem = from_metrics(path)
    assert isinstance(problem, str)
    assert "metrics.json nests" in problem and "levels deep" in problem


def test_nesting_inside_strings_does_not_count(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"test_accuracy": 0.97, "note": "[" * 1000 + '\\"{'}))
    assert from_metrics(path) == ReportedAccuracy(0.97, "metrics.json", '"test_accuracy": 0.97')


def test_a_huge_metrics_file_is_not_read(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"test_accuracy": 0.97, "pad": "x" * 2 * MB}))
    problem = from_metrics(path)
    assert isinstance(problem, str) and "more than the limit of 1,000,000" in problem


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model_mb", "0", "profiles.offline.limits.model_mb: must be a number at least 1, got 0"),
        (
            "output_mb",
            '"big"',
            "profiles.offline.limits.output_mb: must be a number at least 1, got 'big'",
        ),
        (
            "writable_mb",
            "-5",
            "profiles.offline.limits.writable_mb: must be a number at least 1, got -5",
        ),
    ],
)
def test_copy_out_limits_are_validated(tmp_path, key, value, message):
    text = DEFAULT_RUBRIC.read_text().replace("pids = 1024", f"pids = 1024\n{key} = {value}", 1)
    (tmp_path / "rubric.toml").write_text(text)
    with pytest.raises(RubricError, match=message):
        load_rubric(tmp_path / "rubric.toml")


def test_copy_out_limits_default_and_can_be_set(tmp_path):
    limits = load_rubric().profile("offline").limits
    assert (limits.model_mb, limits.output_mb, limits.writable_mb) == (500, 1024, 2048)
    text = DEFAULT_RUBRIC.read_text().replace("pids = 1024", "pids = 1024\nmodel_mb = 50", 1)
    (tmp_path / "rubric.toml").write_text(text)
    assert load_rubric(tmp_path / "rubric.toml").profile("offline").limits.model_mb == 50


def _tree_v1(root: Path) -> Path:
    for controller in ("pids", "memory", "cpu", "name=systemd"):
        (root / controller).mkdir(parents=True)
    return root


def test_a_v1_build_cgroup_is_limited_and_removed(tmp_path):
    root = _tree_v1(tmp_path)
    info = {"CgroupDriver": "cgroupfs", "CgroupVersion": "1"}
    cgroup = build_cgroup(info, memory_mb=512, pids=200, owner="run-1/x", root=root)
    assert cgroup.note is None and cgroup.parent is not None
    name = cgroup.parent.lstrip("/")
    assert cgroup.parent == f"/{name}" and name.startswith("lab5-grader-build-run-1x-")
    assert (root / "pids" / name / "pids.max").read_text() == "200"
    assert (root / "memory" / name / "memory.limit_in_bytes").read_text() == str(512 << 20)
    (root / "cpu" / name / "step").mkdir(parents=True)  # what the engine makes in the others
    assert cgroup.limits_reached() == LimitsReached(pids=False, memory=False)
    (root / "pids" / name / "pids.peak").write_text("200\n")
    assert cgroup.limits_reached() == LimitsReached(pids=True, memory=False)
    (root / "memory" / name / "memory.max_usage_in_bytes").write_text(str(512 << 20))
    assert cgroup.limits_reached() == LimitsReached(pids=True, memory=True)
    # A real cgroup folder's files vanish with it; these are plain files.
    for path in [*(root / "pids" / name).iterdir(), *(root / "memory" / name).iterdir()]:
        path.unlink()
    assert cgroup.remove(wait_s=1)
    assert [p for p in root.rglob("*") if name in str(p)] == []


def test_a_v2_build_cgroup(tmp_path):
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory pids\n")
    info = {"CgroupDriver": "cgroupfs", "CgroupVersion": "2"}
    cgroup = build_cgroup(info, memory_mb=256, pids=64, root=tmp_path)
    assert cgroup.parent is not None
    folder = tmp_path / cgroup.parent.lstrip("/")
    assert (folder / "pids.max").read_text() == "64"
    assert (folder / "memory.max").read_text() == str(256 << 20)


def test_where_no_build_cgroup_can_be_made_the_note_says_so(tmp_path):
    systemd = build_cgroup({"CgroupDriver": "systemd", "CgroupVersion": "2"}, 512, 200)
    assert systemd.parent is None
    assert systemd.note is not None and "systemd cgroup driver" in systemd.note
    assert "no process limit" in systemd.note
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    v2 = build_cgroup({"CgroupDriver": "cgroupfs", "CgroupVersion": "2"}, 512, 200, root=tmp_path)
    assert v2.parent is None and v2.note is not None
    assert "no process limit for image builds" in v2.note and "pids and memory" in v2.note
    assert list(tmp_path.iterdir()) == [tmp_path / "cgroup.subtree_control"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_the_output_folder_is_bounded_and_writable_by_anyone(tmp_path):
    with OutputFolder(tmp_path / "output", 4 * MB) as output:
        assert output.mounted and output.note is None
        assert output.path.stat().st_mode & 0o777 == 0o777
        with pytest.raises(OSError, match="No space left on device"):
            (output.path / "big").write_bytes(bytes(5 * MB))
        assert output.over_limit() is None  # the file system itself stops it
    assert not (tmp_path / "output").exists()
    assert str(tmp_path) not in Path("/proc/self/mounts").read_text()


def test_an_output_folder_that_cannot_be_mounted_is_watched(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_engine_shares_mounts", lambda: False)
    with OutputFolder(tmp_path / "output", 4 * MB) as output:
        assert not output.mounted
        assert output.note is not None and "watched, not bounded" in output.note
        assert "another mount namespace" in output.note
        (output.path / "small").write_bytes(os.urandom(MB))
        assert output.over_limit() is None
        (output.path / "big").write_bytes(os.urandom(5 * MB))
        problem = output.over_limit()
        assert problem is not None and "training wrote 6 MB to $OUTPUT_DIR" in problem
        assert "more than the limit of 4 MB" in problem
    assert not (tmp_path / "output").exists()


def test_a_killed_runs_build_cgroups_are_removed_and_no_others(tmp_path):
    root = _tree_v1(tmp_path)
    info = {"CgroupDriver": "cgroupfs", "CgroupVersion": "1"}
    for owner in ("run-a", "run-a", "run-b"):
        build_cgroup(info, 512, 200, owner=owner, root=root)
    for path in root.rglob("*.*"):  # as a real cgroup's files, gone with its folder
        if path.is_file():
            path.unlink()
    assert len(leftover_cgroups("run-a", root)) == 4  # pids and memory of each
    assert remove_cgroups_of("run-a", root) == 0
    assert leftover_cgroups("run-a", root) == []
    assert len(leftover_cgroups("run-b", root)) == 2

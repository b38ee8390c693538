"""Images kept with `--keep-images` stay across runs, within a size budget, oldest removed first."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from grader.domain.settings import Settings
from grader.engine.containers import RUN_LABEL, build_image, grader_labels, remove_labelled
from grader.engine.daemon import connect
from grader.engine.runs import RunLock, keep_images_of, prune_kept_images, reap_dead_runs
from grader.engine.standins import BASE_IMAGE
from tests.cli import run_grader

pytestmark = pytest.mark.integration

RUNS = ("test-kept-old", "test-kept-newer", "test-kept-current", "test-not-kept")
# A step of its own per image (no shared build cache), so each has 3 MB of its own.
THREE_MB = "RUN head -c 3000000 /dev/urandom > /blob-{}"


@pytest.fixture
def images(tmp_path: Path):
    """One 3 MB image per run, built a second apart (oldest first)."""
    client = connect()
    tags = {}
    for run_id in RUNS:
        context = tmp_path / run_id
        context.mkdir()
        step = THREE_MB.format(f"{run_id}-{time.time_ns()}")
        (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\n{step}\n")
        tag = f"lab5-grader/test-kept:{run_id}"
        result = build_image(
            client, context=context, dockerfile=context / "Dockerfile", tag=tag,
            labels=grader_labels(run_id, "kept", "test"), log_path=context / "build.log",
            timeout_s=300,
        )  # fmt: skip
        assert result.ok, result.error
        tags[run_id] = tag
        time.sleep(1.1)
    yield client, tags
    for run_id in RUNS:
        remove_labelled(client, {RUN_LABEL: run_id})


def _tags(client) -> set[str]:
    # One listing call: other work on the host may remove images between per-image calls.
    return {tag for image in client.api.images() for tag in image.get("RepoTags") or []}


def _ids(client) -> set[str]:
    return {image["Id"] for image in client.api.images()}


def test_oldest_kept_images_go_first_and_nothing_else_is_touched(images, tmp_path):
    client, tags = images
    settings = Settings(home=tmp_path / "home", docker_host=None, pull_timeout_s=1)
    for run_id in ("test-kept-old", "test-kept-newer"):
        keep_images_of(settings, run_id)
    # Not the whole host's images (other work changes them): the base they share layers with.
    others = {client.images.get(BASE_IMAGE).id}
    # The current run's 3 MB and the newer run's 3 MB fit 7 MB; the old run's do not.
    removed = prune_kept_images(client, settings, 7_000_000, "test-kept-current")
    assert removed == [tags["test-kept-old"]]
    assert not (settings.kept_images_dir / "test-kept-old").exists()  # nothing of it is left
    assert {tags["test-kept-newer"], tags["test-kept-current"], tags["test-not-kept"]} <= (
        _tags(client)
    )
    assert others <= _ids(client)
    # The current run's images stay even over the budget; a run not marked kept is not touched.
    assert prune_kept_images(client, settings, 0, "test-kept-current") == [tags["test-kept-newer"]]
    assert {tags["test-kept-current"], tags["test-not-kept"]} <= _tags(client)


def test_reaping_removes_only_provably_dead_runs_and_leaves_kept_images(
    images, tmp_path, monkeypatch
):
    client, tags = images
    # Locks of the test's own, so that other runs on the host leave these runs to it.
    monkeypatch.setenv("GRADER_RUN_LOCKS", str(tmp_path / "locks"))
    settings = Settings.from_env()
    RunLock(settings, "test-not-kept").release()  # ended: its lock is free
    alive = RunLock(settings, "test-kept-current")
    keep_images_of(settings, "test-kept-old")  # ended keeping its images
    try:
        reaped = reap_dead_runs(client, settings, among=RUNS)
        left = _tags(client)
    finally:
        alive.release()
        (settings.kept_images_dir / "test-kept-old").unlink()
        reap_dead_runs(client, settings, among=["test-kept-current"])
    assert reaped == ["test-not-kept"]
    assert tags["test-not-kept"] not in left
    assert tags["test-kept-old"] in left  # kept on purpose
    assert tags["test-kept-current"] in left  # alive
    assert tags["test-kept-newer"] in left  # nothing proves it dead: not ours to remove


def test_prune_removes_a_dead_runs_images_and_leaves_a_live_ones(images, tmp_path, monkeypatch):
    client, tags = images
    # A home and a lock folder of the test's own: the host's other runs are not known here, so
    # their images are left too (they are not known to have ended).
    env = {"GRADER_HOME": str(tmp_path / "home"), "GRADER_RUN_LOCKS": str(tmp_path / "locks")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    RunLock(settings, "test-not-kept").release()
    alive = RunLock(settings, "test-kept-current")
    try:
        pruned = run_grader("images", "prune", env=env)
    finally:
        alive.release()
    assert pruned.returncode == 0, pruned.stderr
    assert tags["test-not-kept"] in pruned.stdout.splitlines()[0]
    assert tags["test-not-kept"] not in _tags(client)
    left = next(line for line in pruned.stdout.splitlines() if line.startswith("left "))
    assert "grading runs still going (or not known to have ended) on this host may use" in left
    for run_id in ("test-kept-current", "test-kept-newer", "test-kept-old"):
        assert tags[run_id] in left and tags[run_id] in _tags(client)

"""Lab step 1 for real: `docker run alpine ls /` and `docker run -it alpine sh` in a pty."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from grader.domain.rubric import load_rubric
from grader.domain.settings import Settings
from grader.engine.baseimages import BaseImageProvider
from grader.engine.containers import RUN_LABEL, build_image, remove_labelled
from grader.engine.daemon import connect
from grader.stages.labsteps import ALPINE, interactive_session, run_listing
from tests.busy import saturate

pytestmark = pytest.mark.integration

LABELS = {RUN_LABEL: "test-lab-steps"}


@pytest.fixture(scope="module")
def client():
    client = connect()
    BaseImageProvider(client, Settings.from_env(), print).ensure(ALPINE)
    yield client
    remove_labelled(client, LABELS)


@pytest.fixture(scope="module")
def without(client, tmp_path_factory):
    """An alpine image with some of its programs removed."""

    def build(*paths: str) -> str:
        context = tmp_path_factory.mktemp("alpine")
        (context / "Dockerfile").write_text(f"FROM {ALPINE}\nRUN rm {' '.join(paths)}\n")
        tag = f"lab5-grader/test-alpine:without-{len(paths)}-{paths[0].replace('/', '-')}"
        result = build_image(
            client, context=context, dockerfile=context / "Dockerfile", tag=tag, labels=LABELS,
            log_path=context / "build.log", timeout_s=120,
        )  # fmt: skip
        assert result.ok, result.error
        return tag

    return build


def test_alpine_lists_its_root_folder(client):
    step = run_listing(client, ALPINE, LABELS)
    assert step.ok, step.detail
    assert {"bin", "etc", "proc", "tmp"} <= set(step.transcript.split())


def test_an_interactive_shell_through_a_pseudo_terminal():
    step = interactive_session(ALPINE, LABELS)
    assert step.ok, step.detail + step.transcript
    assert step.detail == "typed `ls /`, `tty` (/dev/pts/0) and `exit`"
    assert "ls /" in step.transcript and "/dev/pts/0" in step.transcript


def test_an_image_without_ls_fails_the_listing(client, without):
    step = run_listing(client, without("/bin/ls"), LABELS)
    assert not step.ok
    assert step.detail.startswith("running `ls /` in lab5-grader/test-alpine:without-1")
    assert "failed:" in step.detail


def test_an_image_without_a_shell_fails_the_session(without):
    step = interactive_session(without("/bin/sh"), LABELS, timeout_s=20)
    assert not step.ok
    assert step.detail == "no shell prompt appeared"
    assert "executable file not found" in step.transcript or "not found" in step.transcript


def test_the_interactive_step_passes_50_times_on_a_saturated_host(client, tmp_path):
    """Busy loops on every core and an image build beside it: the dialogue goes by what the
    shell prints, so the verdict stays, within the deadline grading gives it."""
    deadline = load_rubric().profile("offline").limits.server_ready_seconds
    with saturate(client, tmp_path, seconds=240) as load:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            steps = list(
                pool.map(lambda _: interactive_session(ALPINE, LABELS, deadline), range(50))
            )
        took = time.monotonic() - started
        load.assert_busy()
    failed = [step for step in steps if not step.ok]
    assert not failed, (
        f"{len(failed)}/50 failed; first: {failed[0].detail}: {failed[0].transcript!r}"
    )
    assert took < 240, f"50 sessions took {took:.0f} s"

"""Base images from real registries on 127.0.0.1 (one open, one with basic auth), from `docker
save` archives, and the plan, prefetch order and error messages of each source."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import bcrypt
import pytest
import requests

from grader.domain.dockerfile import image_name
from grader.domain.errors import BaseImageUnavailable
from grader.domain.settings import Settings
from grader.engine.baseimages import BaseImageProvider, ImageSources, mirror_reference
from grader.engine.daemon import connect
from grader.engine.standins import ALPINE_IMAGE, TORCHSERVE_IMAGE
from grader.stages.labsteps import ALPINE
from tests.cli import ROOT, free_port, run_grader

pytestmark = pytest.mark.integration

USER, PASSWORD = "ta", "s3cret-pass"


def _registry_binary(settings: Settings) -> Path:
    """Debian's docker-registry binary, unpacked from its package (nothing installed or run)."""
    binary = settings.home / "tools" / "docker-registry" / "usr" / "bin" / "docker-registry"
    if not binary.is_file():
        work = binary.parents[2]
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "docker-registry"], cwd=work, check=True,
                       capture_output=True)  # fmt: skip
        package = next(work.glob("docker-registry_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(package), str(work)], check=True)
    return binary


def _start_registry(folder: Path, auth: bool) -> tuple[str, subprocess.Popen]:
    port = free_port()
    config = [
        "version: 0.1",
        "storage:",
        f"  filesystem: {{rootdirectory: {folder / 'storage'}}}",
        f"http: {{addr: '127.0.0.1:{port}'}}",
    ]
    if auth:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()
        (folder / "htpasswd").write_text(f"{USER}:{hashed}\n")
        config += ["auth:", f"  htpasswd: {{realm: lab5, path: {folder / 'htpasswd'}}}"]
    (folder / "config.yml").write_text("\n".join(config) + "\n")
    binary = _registry_binary(Settings.from_env())
    log = open(folder / "registry.log", "w")  # noqa: SIM115  # closed with the process
    process = subprocess.Popen([str(binary), "serve", str(folder / "config.yml")],
                               stdout=log, stderr=log)  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://{address}/v2/", timeout=1).status_code in (200, 401):
                return address, process
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise AssertionError((folder / "registry.log").read_text())


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    """An open mirror and one with basic auth, each holding alpine:mirror-test."""
    client = connect()
    BaseImageProvider(client, Settings.from_env(), print).ensure(ALPINE)
    open_folder = tmp_path_factory.mktemp("registry-open")
    auth_folder = tmp_path_factory.mktemp("registry-auth")
    mirror, open_process = _start_registry(open_folder, auth=False)
    private, auth_process = _start_registry(auth_folder, auth=True)
    name = image_name("alpine:mirror-test")
    for address, credentials in (
        (mirror, None),
        (private, {"username": USER, "password": PASSWORD}),
    ):
        pushed = mirror_reference(address, name)
        client.images.get(ALPINE_IMAGE).tag(pushed)
        for chunk in client.api.push(pushed, stream=True, decode=True, auth_config=credentials):
            assert "error" not in chunk, chunk
        client.images.remove(pushed)
    yield mirror, private
    for process in (open_process, auth_process):
        process.terminate()
        process.wait(timeout=10)
    for folder in (open_folder, auth_folder):  # gigabytes of layers
        shutil.rmtree(folder / "storage", ignore_errors=True)
    for image in client.api.images():  # the names the mirrors' pulls left (one listing call)
        for tag in image.get("RepoTags") or []:
            if tag.startswith((f"{mirror}/", f"{private}/")):
                client.images.remove(tag)


@pytest.fixture
def provider_for(tmp_path):
    client = connect()
    settings = Settings(home=tmp_path / "home", docker_host=None, pull_timeout_s=30)

    def make(**sources: object) -> BaseImageProvider:
        return BaseImageProvider(client, settings, print, ImageSources(**sources))  # type: ignore[arg-type]

    yield make
    for tag in ("alpine:mirror-test", "alpine:archive-test"):
        for image in client.images.list(tag):
            for other in image.tags:
                if other != ALPINE_IMAGE and not other.startswith("alpine:latest"):
                    client.images.remove(other)


def test_a_mirror_provides_the_image_under_its_own_name(registries, provider_for):
    mirror, _ = registries
    provider = provider_for(order=("local", "mirrors"), mirrors=(mirror,))
    base = provider.ensure("alpine:mirror-test")
    assert base.origin == f"mirror {mirror}"
    assert connect().images.get("alpine:mirror-test").id == base.image_id


def test_a_private_mirror_uses_dockers_own_credentials(
    registries, provider_for, tmp_path, monkeypatch
):
    _, private = registries
    provider = provider_for(order=("mirrors",), mirrors=(private,))
    with pytest.raises(BaseImageUnavailable) as error:
        provider.ensure("alpine:mirror-test")
    assert f"mirror {private}: " in str(error.value)
    assert "no basic auth credentials" in str(error.value) or "unauthorized" in str(error.value)
    config = tmp_path / "docker-config"
    config.mkdir()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {private: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    provider = provider_for(order=("mirrors",), mirrors=(private,))
    assert provider.ensure("alpine:mirror-test").origin == f"mirror {private}"


def test_an_image_archive_provides_the_image(provider_for, tmp_path):
    client = connect()
    client.images.get(ALPINE_IMAGE).tag("alpine", "archive-test")
    folder = tmp_path / "archives"
    folder.mkdir()
    with open(folder / "alpine.tar", "wb") as archive:
        for chunk in client.images.get("alpine:archive-test").save(named="alpine:archive-test"):
            archive.write(chunk)
    client.images.remove("alpine:archive-test")
    provider = provider_for(order=("local", "archives"), archives=(folder,))
    assert provider.ensure("alpine:archive-test").origin == "archive alpine.tar"
    assert client.images.get("alpine:archive-test")


def test_every_source_tried_is_named_in_order(provider_for, tmp_path):
    provider = provider_for(
        order=("local", "registry", "mirrors", "archives", "standins"),
        mirrors=(f"127.0.0.1:{free_port()}",), archives=(tmp_path,),
    )  # fmt: skip
    with pytest.raises(BaseImageUnavailable) as error:
        provider.ensure("nosuch/image:1")
    message = str(error.value)
    assert message.startswith("base image 'nosuch/image:1' is not available: not on this host; ")
    parts = message.split("; ")
    assert parts[1].startswith("pull failed (")
    assert any(part.startswith("mirror 127.0.0.1:") for part in parts)
    assert f"no image archive has it (folders: {tmp_path})" in message
    assert message.endswith("no offline stand-in exists for it (stand-ins exist for "
                            "pytorch/pytorch:*, pytorch/torchserve:* and alpine:*)")  # fmt: skip


def test_plan_and_prefetch_from_the_command_line(registries, tmp_path):
    mirror, _ = registries
    submission = tmp_path / "subs" / "alice"
    (submission / "train").mkdir(parents=True)
    (submission / "train" / "Dockerfile").write_text("FROM alpine:mirror-test\nCMD ls\n")
    (tmp_path / "subs" / "bob" / "train").mkdir(parents=True)
    (tmp_path / "subs" / "bob" / "train" / "Dockerfile").write_text("FROM nosuch/image:2\n")
    common = ["--image-sources", "local,mirrors", "--mirror", mirror]
    plan = run_grader("images", "plan", str(tmp_path / "subs"), *common)
    assert plan.returncode == 1
    lines = plan.stdout.splitlines()
    assert f"mirror {mirror} alpine:mirror-test (1 submission)" in [
        " ".join(line.split()) for line in lines
    ]
    assert any(
        line.startswith("MISSING nosuch/image:2 (1 submission): not on this host; mirror")
        for line in lines
    )
    fetched = run_grader("images", "prefetch", str(submission.parent / "alice"), *common)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.split()[:2] == ["mirror", mirror]
    connect().images.remove("alpine:mirror-test")


def test_grading_takes_its_base_images_from_a_mirror_alone(registries, tmp_path):
    """No registry, no stand-in allowed: the TorchServe base comes from the mirror."""
    mirror, _ = registries
    client = connect()
    public = "pytorch/torchserve:0.12.0-gpu"
    name = image_name(public)
    pushed = mirror_reference(mirror, name)
    client.images.get(TORCHSERVE_IMAGE).tag(pushed)
    for chunk in client.api.push(pushed, stream=True, decode=True):
        assert "error" not in chunk, chunk
    client.images.remove(pushed)
    had_public = bool(client.images.list(public))
    if had_public:
        client.images.remove(public)  # the stand-in stays under its own name
    try:
        done = run_grader(
            "grade", str(ROOT / "submissions" / "serve-token-auth"), "--report-dir",
            str(tmp_path / "r"), "--image-sources", "local,mirrors", "--mirror", mirror,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads((tmp_path / "r" / "results.json").read_text())["submissions"]
        graded = result["serve-token-auth"]
        assert graded["score"] == 60
        assert graded["measurements"]["serve_base_images"] == [
            {"image": public, "source": f"mirror {mirror}", "id": client.images.get(public).id}
        ]
        assert not any("stand-in" in note for note in graded["notes"])
    finally:
        if not client.images.list(public):
            client.images.get(TORCHSERVE_IMAGE).tag(name.repository, name.tag)


def test_grading_tells_a_missing_base_image_once_up_front(tmp_path):
    for name in ("ann", "ben"):
        (tmp_path / "subs" / name / "train").mkdir(parents=True)
        (tmp_path / "subs" / name / "train" / "Dockerfile").write_text("FROM nosuch/image:3\n")
    done = run_grader(
        "grade", str(tmp_path / "subs"), "--report-dir", str(tmp_path / "r"), "-j", "2",
        "--image-sources", "local,standins",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    told = [line for line in done.stdout.splitlines() if "nosuch/image:3 is not available" in line]
    assert told == [
        "[grader] base image nosuch/image:3 is not available for 2 submissions (ann, ben): not on "
        "this host; no offline stand-in exists for it (stand-ins exist for pytorch/pytorch:*, "
        "pytorch/torchserve:* and alpine:*)"
    ]
    results = json.loads((tmp_path / "r" / "results.json").read_text())["submissions"]
    for name in ("ann", "ben"):
        message = results[name]["checks"]["train.build"]["message"]
        assert message.startswith("the training image did not build: base image 'nosuch/image:3'")


def test_load_list_and_prune_touch_only_what_the_harness_provided(tmp_path):
    client = connect()
    # A home and run locks of its own: grading runs going on the host would make prune leave
    # the base images they may use.
    home = {"GRADER_HOME": str(tmp_path / "home"), "GRADER_RUN_LOCKS": str(tmp_path / "locks")}
    tiny = io.BytesIO()  # an image of one file, like any genuine one (no stand-in label)
    with tarfile.open(fileobj=tiny, mode="w") as rootfs:
        entry = tarfile.TarInfo("hello")
        entry.size = 2
        rootfs.addfile(entry, io.BytesIO(b"hi"))
    client.api.import_image(src=tiny.getvalue(), repository="alpine", tag="prune-test")
    (tmp_path / "archives").mkdir()
    with open(tmp_path / "archives" / "alpine.tar", "wb") as archive:
        for chunk in client.images.get("alpine:prune-test").save(named="alpine:prune-test"):
            archive.write(chunk)
    client.images.remove("alpine:prune-test")
    client.images.get(ALPINE_IMAGE).tag("someone/else", "keep")  # not the harness's to remove
    try:
        loaded = run_grader("images", "load", str(tmp_path / "archives"), env=home)
        assert loaded.stdout.strip() == "loaded alpine.tar: alpine:prune-test"
        listed = run_grader("images", "list", env=home).stdout.splitlines()
        line = next(line for line in listed if line.startswith("alpine:prune-test "))
        assert line.endswith(f"archive {tmp_path / 'archives' / 'alpine.tar'}")
        assert any(line.startswith(f"{ALPINE_IMAGE} ") and "stand-in (alpine)" in line
                   for line in listed)  # fmt: skip
        assert not any(line.startswith("someone/else") for line in listed)
        pruned = run_grader("images", "prune", env=home)
        assert "alpine:prune-test" in pruned.stdout
        # One listing call: other work on the host may remove images between per-image calls.
        tags = {tag for image in client.api.images() for tag in image.get("RepoTags") or []}
        assert "alpine:prune-test" not in tags
        assert {ALPINE_IMAGE, "someone/else:keep", TORCHSERVE_IMAGE} <= tags
    finally:
        client.images.remove("someone/else:keep")

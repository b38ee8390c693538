"""Hostile and odd hand-ins at intake, graded in one batch with the real engine: links out of the
submission (model path, sample image), archives of `.`, nameless, duplicate or clashing entries,
ids that collide or are claimed twice, and the lab's own flat layout. Each gets its verdicts with
the reason; the batch completes; nothing outside the run's folders changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from grader.domain.rubric import DEFAULT_RUBRIC
from grader.domain.settings import Settings
from grader.engine.containers import RUN_LABEL
from grader.engine.daemon import connect
from tests.cli import run_grader
from tests.examples import COMMITTED_MODEL, REFERENCE_SERVE, write_files, write_serve_variant

pytestmark = pytest.mark.integration

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"
LIMITS = {  # the default rubric's limits, cut so that a broken case ends in seconds
    "train_seconds = 900": "train_seconds = 60",
    "server_ready_seconds = 180": "server_ready_seconds = 90",
}
DONE = "echo Test accuracy: 97.5%; echo weights > $OUTPUT_DIR/mnist_cnn.pt"
# Training that hands over the committed model, so that the serve half has a good one.
HAND_OVER = (
    f"FROM {CUDA_BASE}\nCOPY mnist_cnn.pt /model.pt\n"
    'CMD ["sh", "-c", "echo Test accuracy: 97.0%; cp /model.pt $OUTPUT_DIR/mnist_cnn.pt"]\n'
)


def _train(command: str = DONE) -> str:
    return f"FROM {CUDA_BASE}\nCMD {json.dumps(['sh', '-c', command])}\n"


def _tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` with what it is: a link's target, a file's digest."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if path.is_symlink():
                found[relative] = f"link {os.readlink(path)}"
            elif path.is_file():
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[relative] = "folder"
    return found


def _hand_ins(batch: Path, host: Path) -> None:
    # A serve context with a link to a host folder, and the model path through it.
    write_files(batch / "model-path-link", {"train/Dockerfile": _train()})
    write_serve_variant(batch / "model-path-link", {})
    (batch / "model-path-link" / "serve" / "out").symlink_to(host / "target-folder")
    write_files(
        batch / "model-path-link", {"submission.toml": '[serve]\nmodel_path = "out/owned.pt"\n'}
    )
    # The student's digit a link to a host file (a real digit 7, so reading it would pass).
    write_files(batch / "sample-link", {"train/Dockerfile": HAND_OVER})
    write_serve_variant(batch / "sample-link", {})
    shutil.copyfile(COMMITTED_MODEL, batch / "sample-link" / "train" / "mnist_cnn.pt")
    (batch / "sample-link" / "serve" / "digit_7.png").unlink()
    (batch / "sample-link" / "serve" / "digit_7.png").symlink_to(host / "digit_7.png")
    # The same named in the manifest.
    write_files(
        batch / "sample-link-named",
        {
            "train/Dockerfile": _train(),
            "serve/Dockerfile": f"FROM {CUDA_BASE}\n",
            "submission.toml": '[serve]\nsample_image = "digit_7.png"\n',
        },
    )
    (batch / "sample-link-named" / "serve" / "digit_7.png").symlink_to(host / "digit_7.png")
    # Special files: a pipe as the Dockerfile of one half; an endless .dockerignore and a link
    # to a host folder in the other, which `COPY . /app` takes as a link, as docker does.
    write_files(
        batch / "special-files",
        {
            "serve/Dockerfile": f'FROM {CUDA_BASE}\nCOPY . /app\nCMD ["true"]\n',
            "serve/mnist_cnn.pt": "committed weights",
        },
    )
    (batch / "special-files" / "train").mkdir()
    os.mkfifo(batch / "special-files" / "train" / "Dockerfile")
    (batch / "special-files" / "serve" / ".dockerignore").symlink_to("/dev/zero")
    (batch / "special-files" / "serve" / "etc").symlink_to("/etc")
    # The lab repository's own flat layout, with a report screenshot next to the digit.
    lab = batch / "lab-layout"
    lab.mkdir()
    for name in ("model.py", "handler.py", "config.properties", "digit_7.png"):
        shutil.copyfile(REFERENCE_SERVE / name, lab / name)
    shutil.copyfile(REFERENCE_SERVE / "Dockerfile", lab / "Dockerfile.infer.gpu")
    shutil.copyfile(REFERENCE_SERVE / "digit_7.png", lab / "screenshot.png")
    shutil.copyfile(COMMITTED_MODEL, lab / "mnist_cnn.pt")
    write_files(lab, {"Dockerfile.gpu": HAND_OVER, "Dockerfile.cpu": "FROM alpine\n"})
    # Archives: of `.`, with a nameless entry, with a file where a folder is needed, with one
    # entry twice (the last one counts).
    dot = batch.parent / "dot-source"
    write_files(dot, {"train/Dockerfile": _train()})
    with tarfile.open(batch / "dot.tar.gz", "w:gz") as archive:
        archive.add(dot, arcname=".")
    with zipfile.ZipFile(batch / "nameless.zip", "w") as archive:
        archive.writestr("nameless/train/Dockerfile", _train())
        archive.writestr(zipfile.ZipInfo(""), b"x")
    with zipfile.ZipFile(batch / "clash.zip", "w") as archive:
        archive.writestr("clash/train", b"x")
        archive.writestr("clash/train/Dockerfile", _train())
    with tarfile.open(batch / "twice.tar.gz", "w:gz") as archive:
        for text in ("FROM nothing-that-exists\n", _train()):
            entry = tarfile.TarInfo("twice/train/Dockerfile")
            entry.size = len(text)
            archive.addfile(entry, io.BytesIO(text.encode()))
    # Ids that differ by case only, and one claimed by a second hand-in.
    for name in ("Bob", "bob"):
        write_files(batch / name, {"train/Dockerfile": _train(f"echo I am {name}; {DONE}")})
    write_files(batch / "alice", {"train/Dockerfile": _train()})
    write_files(
        batch / "mallory",
        {"train/Dockerfile": _train(), "submission.toml": '[student]\nid = "alice"\n'},
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-intake")
    host = folder / "host"
    (host / "target-folder").mkdir(parents=True)
    shutil.copyfile(REFERENCE_SERVE / "digit_7.png", host / "digit_7.png")
    batch = folder / "submissions"
    _hand_ins(batch, host)
    rubric = DEFAULT_RUBRIC.read_text()
    for old, new in LIMITS.items():
        assert old in rubric
        rubric = rubric.replace(old, new, 1)
    (folder / "rubric.toml").write_text(rubric)
    before = _tree(folder)
    done = run_grader(
        "grade", str(batch), "--rubric", str(folder / "rubric.toml"),
        "--report-dir", str(folder / "reports"), timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((folder / "reports" / "results.json").read_text())
    return results["submissions"], results, folder, before


def test_a_model_path_through_a_link_out_is_refused_and_nothing_lands_on_the_host(graded):
    submissions, _, folder, _ = graded
    checks = submissions["model-path-link"]["checks"]
    assert checks["train.run"]["status"] == "passed"
    assert checks["serve.build"]["status"] == "failed"
    assert (
        "serve.model_path out/owned.pt: out is a link that leads out of the serve context"
        in (checks["serve.build"]["message"])
    )
    assert list((folder / "host" / "target-folder").iterdir()) == []


def test_a_sample_image_linked_out_is_never_read(graded):
    submissions, _, _, _ = graded
    checks = submissions["sample-link"]["checks"]
    assert checks["serve.model_ready"]["status"] == "passed", checks["serve.model_ready"]
    sample = checks["serve.sample_prediction"]
    assert sample["status"] == "failed"
    assert sample["message"].startswith("no handwritten digit image found in serve/")
    named = submissions["sample-link-named"]["checks"]["train.dockerfile"]
    assert named["status"] == "failed"
    assert "serve.sample_image: 'digit_7.png' leaves the submission folder" in named["message"]


def test_special_files_neither_block_nor_lead_out(graded):
    submissions, _, _, _ = graded
    checks = submissions["special-files"]["checks"]
    assert checks["train.dockerfile"]["status"] == "failed"
    assert "the training half is missing" in checks["train.dockerfile"]["message"]
    assert "Dockerfile.gpu or Dockerfile.cpu" in checks["train.dockerfile"]["message"]
    # built with the link copied as a link, as `docker build` of the folder does
    assert checks["serve.build"]["status"] == "passed", checks["serve.build"]
    assert "exited with code 0" in checks["serve.ping"]["message"]


def test_the_lab_layout_is_graded_as_the_lab_hands_it_in(graded):
    submissions, _, _, _ = graded
    lab = submissions["lab-layout"]
    for check_id in ("train.build", "train.run", "serve.build", "serve.ping", "serve.model_ready"):
        assert lab["checks"][check_id]["status"] == "passed", (check_id, lab["checks"][check_id])
    assert lab["checks"]["serve.sample_prediction"]["status"] == "passed"
    notes = " | ".join(lab["notes"])
    assert "built from Dockerfile.gpu (preferred over Dockerfile.cpu)" in notes
    assert "built from Dockerfile.infer.gpu" in notes


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nameless", "nameless.zip: refused, nothing was unpacked: entry '' is a file without"),
        ("clash", "entry 'clash/train/Dockerfile' needs a folder 'clash/train' where the archive"),
    ],
)
def test_unsafe_archives_are_refused_for_themselves_alone(graded, name, message):
    submissions, _, _, _ = graded
    result = submissions[name]
    assert result["score"] == 0
    for check_id, check in result["checks"].items():
        if not check_id.startswith("env."):  # lab step 1 does not grade the hand-in
            assert check["status"] == "failed", (check_id, check)
    assert message in result["checks"]["train.dockerfile"]["message"]


def test_archives_of_dot_and_of_repeated_entries_are_graded(graded):
    submissions, _, _, _ = graded
    for name in ("dot", "twice"):
        checks = submissions[name]["checks"]
        assert checks["train.build"]["status"] == "passed", (name, checks["train.build"])
        assert checks["train.run"]["status"] == "passed", (name, checks["train.run"])


def test_ids_apart_by_case_share_nothing(graded):
    submissions, _, folder, _ = graded
    assert {"Bob", "bob (bob)"} <= set(submissions)
    assert "graded as 'bob (bob)'" in " ".join(submissions["bob (bob)"]["notes"])
    artifacts = folder / "reports" / "artifacts"
    assert "I am Bob" in (artifacts / "bob" / "train.log").read_text()
    assert "I am bob" in (artifacts / "bob-bob" / "train.log").read_text()
    stored = folder / "reports" / "submissions"
    assert (stored / "bob.json").is_file() and (stored / "bob-bob.json").is_file()


def test_a_claimed_student_id_flags_both(graded):
    submissions, _, _, _ = graded
    alice, mallory = submissions["alice"], submissions["alice (mallory)"]
    for result in (alice, mallory):
        assert any("student id 'alice' is claimed by 2 submissions" in f for f in result["flags"])
        assert result["checks"]["train.run"]["status"] == "passed"
    assert alice["path"].endswith("/alice") and mallory["path"].endswith("/mallory")


def test_the_batch_completed_and_nothing_outside_the_run_changed(graded, junit_schema):
    submissions, results, folder, before = graded
    assert len(submissions) == 13
    for result in submissions.values():
        assert all(check["status"] != "error" for check in result["checks"].values()), result
    after = _tree(folder)
    outside = {path: kind for path, kind in after.items() if not path.startswith("reports")}
    assert outside == before  # the hand-ins, and the host folder they link to, as they were
    tree = junit_schema((folder / "reports" / "junit.xml").read_text())
    assert len(tree.findall("testsuite")) == 13
    client = connect()
    selector = {"label": f"{RUN_LABEL}={results['run_id']}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.images.list(filters=selector) == []
    assert not Settings.from_env().run_dir(results["run_id"]).exists()

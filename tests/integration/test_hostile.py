"""The catalog of hostile and broken submissions, graded in one batch: each gets its verdicts and
a reason, the batch finishes, and nothing is left behind or changed on the host.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grader.domain.dataset import load_dataset
from grader.domain.rubric import DEFAULT_RUBRIC
from grader.domain.settings import Settings
from grader.engine.containers import LOG_HEAD_BYTES, LOG_TAIL_BYTES, RUN_LABEL
from grader.engine.daemon import connect
from tests.cli import run_grader
from tests.examples import write_files, write_serve_variant

pytestmark = pytest.mark.integration

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"
# The default rubric's limits, cut so that every case ends within a minute or two, yet at least
# twice what the honest parts (TorchServe's start, a memory hog reaching its limit) take alone,
# so that a busy host does not change a verdict.
LIMITS = {
    "train_seconds = 900": "train_seconds = 30",
    "server_ready_seconds = 180": "server_ready_seconds = 90",
    "memory_mb = 4096": "memory_mb = 1024",
    "pids = 1024": "pids = 512",
    "predict_timeout_seconds = 30": "predict_timeout_seconds = 4",
}
STUDENT_FILE_ON_HOST = Path("/etc/lab5-owned-by-a-student")
DONE = "echo Test accuracy: 97.5%; echo weights > $OUTPUT_DIR/mnist_cnn.pt"


@dataclass
class Case:
    what: str  # the behaviour, for the README's table
    hits: str  # the limit or rule that stops it
    files: dict[str, str] = field(default_factory=dict)
    serve: dict[str, tuple[str, str]] | None = None  # changes to the reference's serve half
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)


def _train(command: str, base: str = CUDA_BASE) -> dict[str, str]:
    return {"train/Dockerfile": f"FROM {base}\nCMD {json.dumps(['sh', '-c', command])}\n"}


CATALOG = {
    "fork-bomb": Case(
        "a shell function that forks itself without end",
        "pids limit, then wall time",
        _train("f() { f | f & }; f; sleep 60"),
        expected={"train.run": ("failed", "did not finish within the limit of 30 s")},
    ),
    "memory-hog": Case(
        "allocates memory until it is stopped",
        "memory limit (OOM kill)",
        _train("python -c 'a = []\nwhile True: a.append(bytearray(64 << 20))'"),
        expected={"train.run": ("failed", "killed for using more than 1024 MB of memory")},
    ),
    "training-loop": Case(
        "training that never ends",
        "wall-time limit",
        _train("echo epoch 1; while :; do :; done"),
        expected={
            "train.run": ("failed", "did not finish within the limit of 30 s"),
            "train.reported_accuracy": ("skipped", "skipped: training did not finish"),
        },
    ),
    "phones-home": Case(
        "training that tries to reach the network",
        "no network in the training container",
        _train(
            "python -c \"import urllib.request; urllib.request.urlopen('http://deb.debian.org/')\""
        ),
        expected={"train.run": ("failed", "training exited with code 1")},
    ),
    "writes-outside": Case(
        "writes to /data and to the image's /etc",
        "read-only /data; the container's own files",
        _train(f"touch /data/owned; touch {STUDENT_FILE_ON_HOST}; {DONE}"),
        expected={"train.run": ("passed", ""), "train.model_artifact": ("passed", "")},
    ),
    "log-flood": Case(
        "prints without end (gigabytes)",
        "log caps (engine rotation, head and tail kept)",
        _train("yes 0123456789012345678901234567890123456789012345678901234567890123456789"),
        expected={"train.run": ("failed", "did not finish within the limit of 30 s")},
    ),
    "snoops": Case(
        "looks for other submissions, the hidden digits and the grader's files",
        "only /data (visible digits) and /output are mounted",
        _train(
            "cat /proc/mounts; find / \\( -path /proc -o -path /sys \\) -prune -o "
            "-name '*-ubyte*' -print; ls /root/.cache; " + DONE
        ),
        expected={"train.run": ("passed", "")},
    ),
    "from-scratch": Case(
        "FROM scratch: an image with no shell",
        "the container cannot start",
        {
            "train/Dockerfile": 'FROM scratch\nCOPY run.sh /run.sh\nCMD ["/run.sh"]\n',
            "train/run.sh": "#!/bin/sh\necho hi\n",
        },
        expected={
            "train.dockerfile": ("failed", "starts FROM scratch, which is not a CUDA-enabled"),
            "train.build": ("passed", ""),
            "train.run": ("failed", "the training container could not start"),
        },
    ),
    "no-cmd": Case(
        "a training image with no CMD of its own",
        "the base image's shell exits at once",
        {"train/Dockerfile": f"FROM {CUDA_BASE}\nRUN echo nothing to run\n"},
        expected={
            "train.run": ("passed", ""),
            "train.reported_accuracy": ("failed", "no accuracy found"),
            "train.model_artifact": ("failed", "did not write mnist_cnn.pt"),
        },
    ),
    "server-exits": Case(
        "a server container whose command ends at once",
        "the harness sees it exit",
        serve={"Dockerfile": ('CMD ["serve"]', 'CMD ["true"]')},
        expected={"serve.ping": ("failed", "exited with code 0 right after it started")},
    ),
    "never-ready": Case(
        "a server container that never listens",
        "server_ready_seconds",
        serve={"Dockerfile": ('CMD ["serve"]', 'CMD ["sleep", "infinity"]')},
        expected={"serve.ping": ("failed", "nothing listens on port 8080 inside the container")},
    ),
    "handler-loop": Case(
        "a handler stuck in a loop on every request",
        "predict_timeout_seconds, then 12 failures in a row stop the rest",
        serve={
            "handler.py": (
                "    def preprocess(self, data):\n",
                "    def preprocess(self, data):\n        while True:\n            pass\n",
            )
        },
        expected={
            "serve.model_ready": ("passed", ""),
            "serve.sample_prediction": ("failed", "no answer from /predictions/mnist"),
            "serve.heldout_accuracy": ("failed", "stopped after 12 failed requests in a row"),
        },
    ),
    "bad-bodies": Case(
        "answers that are not digits",
        "the body is quoted in the failure",
        serve={
            "handler.py": (
                "        return data.argmax(dim=1).tolist()",
                "        return [{'digit': 'seven'} for _ in data]",
            )
        },
        expected={
            "serve.sample_prediction": ("failed", "cannot read a digit from the prediction body"),
        },
    ),
    "symlinks-out": Case(
        "build context with symbolic links to /etc/passwd and to a secret host file",
        "the engine never follows a link out of the context",
        {
            "train/Dockerfile": f"FROM {CUDA_BASE}\nCOPY passwd secret /stolen/\n"
            f'CMD ["sh", "-c", "cat /stolen/*; {DONE}"]\n'
        },
        expected={"train.build": ("failed", "")},
    ),
}
ARCHIVE_CASE = Case(
    "an archive whose entry climbs out of the submission",
    "archive intake refuses it",
    expected={"train.dockerfile": ("failed", "leaves the submission folder")},
)  # graded as evil-archive.tar.gz


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    secret = secrets.token_hex(16)
    (folder / "host-secret").write_text(secret)
    batch = folder / "submissions"
    for name, case in CATALOG.items():
        write_files(batch / name, case.files)
        if case.serve is not None:
            write_serve_variant(batch / name, case.serve)
    (batch / "symlinks-out" / "train" / "passwd").symlink_to("/etc/passwd")
    (batch / "symlinks-out" / "train" / "secret").symlink_to(folder / "host-secret")
    with tarfile.open(batch / "evil-archive.tar.gz", "w:gz") as archive:
        entry = tarfile.TarInfo("../../lab5-escaped")
        entry.size = 4
        archive.addfile(entry, io.BytesIO(b"boom"))
    rubric = DEFAULT_RUBRIC.read_text()
    for old, new in LIMITS.items():
        assert old in rubric
        rubric = rubric.replace(old, new, 1)
    (folder / "rubric.toml").write_text(rubric)
    dataset = Settings.from_env().datasets_dir / "offline"
    before = sorted(str(p) for p in dataset.rglob("*"))
    client = connect()
    volumes = {volume.id for volume in client.volumes.list()}
    done = run_grader(
        "grade", str(batch), "--rubric", str(folder / "rubric.toml"),
        "--report-dir", str(folder / "reports"), timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((folder / "reports" / "results.json").read_text())
    return results, folder, secret, before, volumes


@pytest.mark.parametrize("name", [*CATALOG, "evil-archive"])
def test_each_case_gets_its_verdicts(graded, name):
    results, _, _, _, _ = graded
    checks = results["submissions"][name]["checks"]
    expected = CATALOG[name].expected if name in CATALOG else ARCHIVE_CASE.expected
    for check_id, (status, phrase) in expected.items():
        assert checks[check_id]["status"] == status, (check_id, checks[check_id]["message"])
        assert phrase in checks[check_id]["message"]
    assert all(check["status"] != "error" for check in checks.values()), checks  # no crash


def test_the_fork_bomb_met_the_process_limit(graded):
    _, folder, _, _, _ = graded
    log = (folder / "reports" / "artifacts" / "fork-bomb" / "train.log").read_text()
    assert "fork" in log.lower() or "resource temporarily unavailable" in log.lower()


def test_a_flood_of_output_is_kept_to_its_head_and_tail(graded):
    _, folder, _, _, _ = graded
    log = folder / "reports" / "artifacts" / "log-flood" / "train.log"
    assert log.stat().st_size < LOG_HEAD_BYTES + LOG_TAIL_BYTES + 500
    assert "bytes of output cut here" in log.read_text()


def test_a_snooping_training_sees_only_the_visible_digits(graded):
    _, folder, _, _, _ = graded
    log = (folder / "reports" / "artifacts" / "snoops" / "train.log").read_text()
    found = [line for line in log.splitlines() if "-ubyte" in line]
    assert found and all(line.startswith("/data/") for line in found)
    assert "hidden" not in log and "lab5-grader" not in log


def test_the_host_is_unchanged_and_nothing_is_left(graded):
    results, folder, secret, before, volumes = graded
    dataset = Settings.from_env().datasets_dir / "offline"
    assert sorted(str(p) for p in dataset.rglob("*")) == before  # /data stayed read-only
    load_dataset(dataset)  # checksums still hold
    assert not STUDENT_FILE_ON_HOST.exists()
    assert not (folder / "lab5-escaped").exists() and not Path("/tmp/lab5-escaped").exists()
    for root, _, files in os.walk(folder / "reports"):
        for name in files:
            assert secret.encode() not in (Path(root) / name).read_bytes(), name
    client = connect()
    selector = {"label": f"{RUN_LABEL}={results['run_id']}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.networks.list(filters=selector) == []
    assert client.images.list(filters=selector) == []
    assert {volume.id for volume in client.volumes.list()} <= volumes
    assert not Settings.from_env().run_dir(results["run_id"]).exists()

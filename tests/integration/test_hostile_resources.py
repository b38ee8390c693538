"""Hostile submissions aimed at the host's resources, graded in one batch with the real engine:
image builds that fork or allocate without end, a training run that writes a huge sparse
model, a deeply nested metrics.json, or fills its own file system or $OUTPUT_DIR. Each gets a
verdict with the reason; the batch finishes; nothing is left behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grader.domain.rubric import DEFAULT_RUBRIC
from grader.domain.settings import Settings
from grader.engine.cgroups import leftover_cgroups
from grader.engine.containers import ROLE_LABEL, RUN_LABEL, SUBMISSION_LABEL
from grader.engine.daemon import connect
from grader.engine.outputs import allocated_bytes
from tests.cli import run_grader
from tests.examples import write_files

pytestmark = pytest.mark.integration

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"
MEMORY_MB, PIDS, WRITABLE_MB, OUTPUT_MB = 512, 256, 100, 64
LIMITS = {  # the default rubric's limits, cut so that every case ends in seconds
    "build_seconds = 900": "build_seconds = 120",
    "train_seconds = 900": "train_seconds = 60",
    "memory_mb = 4096": f"memory_mb = {MEMORY_MB}",
    "pids = 1024": f"pids = {PIDS}\nwritable_mb = {WRITABLE_MB}\noutput_mb = {OUTPUT_MB}",
}
DONE = "echo Test accuracy: 97.5%; echo weights > $OUTPUT_DIR/mnist_cnn.pt"


def _train(command: str, run: str = "") -> dict[str, str]:
    cmd = json.dumps(["sh", "-c", command])
    return {"train/Dockerfile": f"FROM {CUDA_BASE}\n{run}CMD {cmd}\n"}


CATALOG: dict[str, dict[str, str]] = {
    # More processes than the limit, each staying: the fork that passes the limit fails.
    "build-fork-bomb": _train(DONE, "RUN for i in $(seq 3000); do sleep 60 & done; wait\n"),
    "build-memory-hog": _train(
        DONE, "RUN python3 -c \"exec('a = []\\nwhile True: a.append(bytearray(32 << 20))')\"\n"
    ),
    "huge-sparse-model": _train(
        "echo Test accuracy: 97.5%; truncate -s 3G $OUTPUT_DIR/mnist_cnn.pt"
    ),
    "sparse-model": _train(
        "echo Test accuracy: 97.5%; echo weights > $OUTPUT_DIR/mnist_cnn.pt; "
        "truncate -s 300M $OUTPUT_DIR/mnist_cnn.pt"
    ),
    "deep-json": _train(
        "python3 -c \"import os; open(os.environ['OUTPUT_DIR'] + '/metrics.json', 'w')"
        ".write('[' * 100000 + ']' * 100000)\"; echo weights > $OUTPUT_DIR/mnist_cnn.pt"
    ),
    # Slowly enough that the writable layer is seen growing past its limit.
    "fills-its-disk": _train(
        "for i in $(seq 400); do head -c 1048576 /dev/urandom > /fill.$i; sleep 0.02; done; " + DONE
    ),
    "fills-output": _train(
        f"dd if=/dev/zero of=$OUTPUT_DIR/big bs=1M count={OUTPUT_MB * 4} || echo dd stopped; "
        "rm -f $OUTPUT_DIR/big; " + DONE
    ),
}
EXPECTED = {
    "build-fork-bomb": {"train.build": ("failed", f"reached the limit of {PIDS} processes")},
    "build-memory-hog": {"train.build": ("failed", f"reached the memory limit of {MEMORY_MB} MB")},
    "huge-sparse-model": {
        "train.run": ("passed", ""),
        "train.model_artifact": ("failed", "mnist_cnn.pt is 3,221 MB, more than the limit of 500"),
    },
    "sparse-model": {"train.model_artifact": ("passed", "")},
    "deep-json": {
        "train.run": ("passed", ""),
        "train.reported_accuracy": ("failed", "metrics.json nests objects or arrays more than"),
        "train.model_artifact": ("passed", ""),
    },
    "fills-its-disk": {
        "train.run": (
            "failed",
            f"into the container's own file system, more than the limit of {WRITABLE_MB} MB",
        ),
    },
    "fills-output": {"train.run": ("passed", ""), "train.model_artifact": ("passed", "")},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-resources")
    batch = folder / "submissions"
    for name, files in CATALOG.items():
        write_files(batch / name, files)
    rubric = DEFAULT_RUBRIC.read_text()
    for old, new in LIMITS.items():
        assert old in rubric
        rubric = rubric.replace(old, new, 1)
    (folder / "rubric.toml").write_text(rubric)
    # The engine keeps only its last events: training containers are counted as they come.
    client = connect()
    created = client.events(
        decode=True,
        filters={"type": "container", "event": "create", "label": [f"{ROLE_LABEL}=train"]},
    )
    trainings: list[dict[str, str]] = []

    def count() -> None:
        with contextlib.suppress(Exception):  # the stream ends when it is closed
            trainings.extend(event["Actor"]["Attributes"] for event in created)

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    done = run_grader(
        "grade", str(batch), "--rubric", str(folder / "rubric.toml"), "-j", "2",
        "--report-dir", str(folder / "reports"), timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    time.sleep(1)  # the last events on their way
    created.close()
    counter.join(timeout=10)
    results = json.loads((folder / "reports" / "results.json").read_text())
    # Training containers run the tagged image; the builder's own containers carry the same
    # labels but run an image id.
    mine = [
        labels.get(SUBMISSION_LABEL) for labels in trainings
        if labels.get(RUN_LABEL) == results["run_id"] and ":train-" in labels.get("image", "")
    ]  # fmt: skip
    return results, folder, mine


@pytest.mark.parametrize("name", list(CATALOG))
def test_each_case_gets_its_verdict_and_reason(graded, name):
    results, _, _ = graded
    checks = results["submissions"][name]["checks"]
    for check_id, (status, phrase) in EXPECTED[name].items():
        assert checks[check_id]["status"] == status, (check_id, checks[check_id]["message"])
        assert phrase in checks[check_id]["message"], checks[check_id]["message"]
    assert all(check["status"] != "error" for check in checks.values()), checks


def test_no_model_came_out_dense(graded):
    _, folder, _ = graded
    artifacts = folder / "reports" / "artifacts"
    assert not (artifacts / "huge-sparse-model" / "mnist_cnn.pt").exists()
    kept = artifacts / "sparse-model" / "mnist_cnn.pt"
    with kept.open("rb") as model:
        assert kept.stat().st_size == 300 << 20 and model.read(8) == b"weights\n"
    assert allocated_bytes(folder / "reports") < 50_000_000


def test_a_deep_metrics_file_did_not_run_training_again(graded):
    _, _, trainings = graded
    assert trainings.count("deep-json") == 1
    assert trainings.count("huge-sparse-model") == 1


def test_a_full_output_folder_failed_inside_the_container(graded):
    _, folder, _ = graded
    log = (folder / "reports" / "artifacts" / "fills-output" / "train.log").read_text()
    assert "No space left on device" in log


def test_reports_are_valid(graded):
    results, folder, _ = graded
    reports = folder / "reports"
    assert set(results["submissions"]) == set(CATALOG)
    suites = ET.parse(reports / "junit.xml").getroot().findall("testsuite")
    assert {suite.get("name") for suite in suites} == set(CATALOG)
    rows = list(csv.DictReader((reports / "gradebook.csv").open()))
    assert {row["submission_id"] for row in rows} == set(CATALOG)


def test_nothing_is_left_behind(graded):
    results, _, _ = graded
    run_id = results["run_id"]
    client = connect()
    selector = {"label": f"{RUN_LABEL}={run_id}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.images.list(filters=selector) == []
    assert leftover_cgroups(run_id) == []
    assert not Settings.from_env().run_dir(run_id).exists()
    assert run_id not in Path("/proc/self/mounts").read_text()  # the output folder's tmpfs

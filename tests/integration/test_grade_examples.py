"""`grader grade` on the bundled examples and the reference, with the real engine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from selenium.webdriver.common.by import By

from grader.domain.hints import LANGUAGES, hints_for
from grader.domain.results import submission_from_json
from grader.domain.submission import slugify
from grader.engine.daemon import connect
from tests.cli import ROOT, run_grader

pytestmark = pytest.mark.integration

CHECKS = [
    "env.alpine_run",
    "env.alpine_interactive",
    "train.dockerfile",
    "train.build",
    "train.run",
    "train.reported_accuracy",
    "train.model_artifact",
    "serve.dockerfile",
    "serve.build",
    "serve.ping",
    "serve.model_ready",
    "serve.sample_prediction",
    "serve.heldout_accuracy",
]
NO_TRAINING = {
    "train.dockerfile": ("failed", "train/Dockerfile: no such file: the training half is missing"),
    "train.build": ("failed", "the training image did not build: train/Dockerfile: no such file"),
    "train.run": ("skipped", "skipped: the training image did not build"),
    "train.reported_accuracy": ("skipped", "skipped: the training image did not build"),
    "train.model_artifact": ("skipped", "skipped: the training image did not build"),
}
NO_SERVING = {
    "serve.dockerfile": ("failed", "serve/Dockerfile: no such file: the inference half is missing"),
    "serve.build": ("failed", "the inference image did not build: build context serve/ is missing"),
    **{
        check_id: ("skipped", "skipped: the inference image did not build")
        for check_id in CHECKS[-4:]
    },
}
# What each bundled example scores, as its README says: the checks it does not pass, with their
# status and a phrase of their message, and the total. Every other check passes.
EXPECTED = {
    "reference": (100, {}),
    "2023010001": (100, {}),
    "broken-build": (
        5,
        {
            "train.build": ("failed", "COPY failed: file not found in build context"),
            **{
                check_id: ("skipped", "skipped: the training image did not build")
                for check_id in CHECKS[4:7]
            },
            **NO_SERVING,
        },
    ),
    "under-trained": (
        30,
        {"train.reported_accuracy": ("failed", "is below the target 0.9000"), **NO_SERVING},
    ),
    "serve-localhost": (
        15,
        {
            **NO_TRAINING,
            "serve.ping": ("failed", "TorchServe listens on 127.0.0.1:8080 inside the container"),
            "serve.model_ready": ("skipped", "skipped: the server did not answer /ping"),
            "serve.sample_prediction": ("skipped", "skipped: the server did not answer /ping"),
            "serve.heldout_accuracy": ("skipped", "skipped: the server did not answer /ping"),
        },
    ),
    "serve-token-auth": (60, NO_TRAINING),
    "serve-wrong-name": (
        25,
        {
            **NO_TRAINING,
            "serve.model_ready": (
                "failed",
                "model 'mnist' is not registered; the server has digits",
            ),
            "serve.sample_prediction": ("skipped", "skipped: the model has no READY worker"),
            "serve.heldout_accuracy": ("skipped", "skipped: the model has no READY worker"),
        },
    ),
    "serve-bad-model": (
        30,
        {
            **NO_TRAINING,
            "serve.sample_prediction": ("failed", "digit_7.png shows a 7 but the server predicted"),
            "serve.heldout_accuracy": ("failed", "below the target 0.9000"),
        },
    ),
}


# The hints `grader check` gives each example (grader/hints.toml).
HINTS = {
    "reference": [],
    "2023010001": [],
    "broken-build": ["copy-missing"],
    "under-trained": ["under-trained"],
    "serve-localhost": ["server-loopback"],
    "serve-token-auth": ["token-auth"],
    "serve-wrong-name": ["model-name"],
    "serve-bad-model": ["under-trained"],
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("reports")
    done = run_grader(
        "grade", "submissions", "reference", "-j", "2", "--report-dir", str(report_dir),
        timeout=3600,
    )  # fmt: skip
    results = json.loads((report_dir / "results.json").read_text())
    return done, report_dir, results


@pytest.mark.parametrize("submission_id", list(HINTS))
def test_each_example_gets_its_hints_in_both_languages(graded, submission_id):
    _, _, results = graded
    result = submission_from_json(results["submissions"][submission_id])
    for language in LANGUAGES:
        assert [hint.id for hint in hints_for(result, language)] == HINTS[submission_id]


def test_grading_exits_zero_whatever_the_scores(graded):
    done, _, _ = graded
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("submission_id", list(EXPECTED))
def test_each_example_scores_what_its_readme_says(graded, submission_id):
    _, _, results = graded
    result = results["submissions"][submission_id]
    score, lost = EXPECTED[submission_id]
    assert list(result["checks"]) == CHECKS
    for check_id, check in result["checks"].items():
        status, phrase = lost.get(check_id, ("passed", ""))
        assert (check["status"], check_id) == (status, check_id), check["message"]
        assert phrase in check["message"]
        assert check["points"] == (check["max_points"] if status == "passed" else 0)
    assert (result["score"], result["max_score"]) == (score, 100)


def test_readmes_state_the_scores():
    for folder in (ROOT / "submissions").iterdir():
        submission_id = "2023010001" if folder.name == "good-student" else folder.name
        assert f"{EXPECTED[submission_id][0]}/100" in (folder / "README.md").read_text()


def test_model_hand_over_and_token_notes(graded):
    _, _, results = graded
    token = results["submissions"]["serve-token-auth"]["notes"]
    assert any("token authorization is on" in note for note in token), token
    committed = results["submissions"]["serve-bad-model"]["notes"]
    assert any("the model committed at mnist_cnn.pt" in note for note in committed), committed
    assert not any("committed" in note for note in results["submissions"]["reference"]["notes"])


def test_heldout_accuracy_is_measured_and_flags_stay_quiet_for_honest_runs(graded):
    _, report_dir, results = graded
    for submission_id in ("reference", "2023010001"):
        result = results["submissions"][submission_id]
        assert result["measurements"]["heldout_accuracy"] >= 0.9
        assert result["measurements"]["heldout_total"] == 800  # drawn from the 1,000 hidden
        assert result["flags"] == []
    bad = json.loads((report_dir / "artifacts" / "serve-bad-model" / "heldout.json").read_text())
    assert bad["accuracy"] < 0.5 and len(bad["wrong"]) == 200


def test_reported_accuracy_sources(graded):
    _, _, results = graded
    reference = results["submissions"]["reference"]["measurements"]
    student = results["submissions"]["2023010001"]["measurements"]
    assert reference["reported_accuracy_source"] == "metrics.json"
    assert student["reported_accuracy_source"].startswith("training log line")
    assert reference["reported_accuracy"] >= 0.9 and student["reported_accuracy"] >= 0.9


def test_artifacts_are_kept(graded):
    _, report_dir, results = graded
    reference = Path(results["submissions"]["reference"]["artifacts"])
    assert reference == report_dir / "artifacts" / "reference"
    assert "Successfully built" in (reference / "train-build.log").read_text()
    assert "Successfully built" in (reference / "serve-build.log").read_text()
    assert "Healthy" in (reference / "server.log").read_text() or (
        "Model server started" in (reference / "server.log").read_text()
    )
    assert "Test set: Average loss" in (reference / "train.log").read_text()
    assert (reference / "mnist_cnn.pt").stat().st_size > 100_000
    assert json.loads((reference / "metrics.json").read_text())["test_accuracy"] >= 0.9
    broken = report_dir / "artifacts" / "broken-build"
    assert "requirements.txt" in (broken / "train-build.log").read_text()
    assert not (broken / "train.log").exists()


def test_standin_use_is_recorded(graded):
    _, _, results = graded
    notes = results["submissions"]["2023010001"]["notes"]
    client = connect()
    image = client.images.get("pytorch/pytorch:2.0.1-cuda11.7-cudnn8-runtime")
    if "lab5-grader.standin" in image.labels:
        assert any("offline stand-in 'pytorch'" in note for note in notes), notes


def test_junit_report(graded, junit_schema):
    _, report_dir, _ = graded
    tree = junit_schema((report_dir / "junit.xml").read_text())
    suites = {suite.get("name"): suite for suite in tree.findall("testsuite")}
    assert set(suites) == set(EXPECTED)
    broken = suites["broken-build"]
    score = {p.get("name"): p.get("value") for p in broken.find("properties")}
    assert (score["score"], score["max_score"]) == ("5", "100")
    build = broken.find("testcase[@name='train.build']")
    assert "COPY failed" in build.find("failure").get("message")
    assert "requirements.txt" in build.find("failure").text


def test_terminal_summary(graded):
    done, _, _ = graded
    lines = done.stdout.splitlines()
    table = lines[
        next(i for i, line in enumerate(lines) if "lab5-grader: profile offline" in line) :
    ]
    assert any(line.split()[:2] == ["under-trained", "30/100"] for line in table)
    assert any(line.split()[:3] == ["reference", "100/100", "-"] for line in table)


def test_nothing_is_left_behind(graded):
    _, _, results = graded
    client = connect()
    selector = {"label": f"lab5-grader.run={results['run_id']}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.images.list(filters=selector) == []


def test_gradebook_matches_the_scores(graded):
    _, report_dir, _ = graded
    rows = list(csv.DictReader((report_dir / "gradebook.csv").open()))
    assert {row["submission_id"]: float(row["score"]) for row in rows} == {
        sid: float(score) for sid, (score, _) in EXPECTED.items()
    }
    good = next(row for row in rows if row["submission_id"] == "2023010001")
    assert good["student_name"] == "Zhang San"
    assert [good[check_id] for check_id in CHECKS] == [
        "0", "0", "5", "10", "10", "10", "5", "5", "10", "10", "5", "10", "20",
    ]  # fmt: skip


def test_gradescope_results_for_every_submission(graded, gradescope_schema):
    _, report_dir, results = graded
    for sid, result in results["submissions"].items():
        path = report_dir / "gradescope" / slugify(sid) / "results.json"
        document = json.loads(path.read_text())
        gradescope_schema(document)
        assert document["score"] == result["score"]
        assert len(document["tests"]) == len(CHECKS)


def test_html_report_in_headless_chromium(graded, chromium, tmp_path):
    _, report_dir, _ = graded
    chromium.get((report_dir / "report.html").as_uri())
    sections = chromium.find_elements(By.CSS_SELECTOR, "section.submission")
    assert len(sections) == len(EXPECTED)
    assert len(chromium.find_elements(By.CSS_SELECTOR, "#pass-rates rect.bar")) == len(CHECKS)
    images = chromium.find_elements(By.CSS_SELECTOR, "#sub-serve-bad-model img.wrong-digit")
    assert len(images) == 24
    assert all(chromium.execute_script("return arguments[0].naturalWidth", i) == 28 for i in images)
    assert chromium.find_elements(By.CSS_SELECTOR, "#sub-reference .training-curve polyline")
    for element_id in ("score-distribution", "pass-rates"):
        shot = tmp_path / f"{element_id}.png"
        chromium.find_element(By.ID, element_id).screenshot(str(shot))
        with Image.open(shot) as picture:
            assert picture.width > 300
            low, high = picture.convert("L").getextrema()
            assert high - low > 100  # drawn, not blank
    page = tmp_path / "page.png"
    chromium.save_screenshot(str(page))
    assert page.stat().st_size > 10_000


def test_a_serial_run_agrees_with_the_parallel_one(graded, tmp_path):
    done, _, parallel = graded
    assert "created: 2/2 workers" in done.stdout  # the examples ran on two xdist workers
    serial = run_grader(
        "grade", "submissions", "reference", "-j", "1", "--report-dir", str(tmp_path), timeout=3600
    )
    assert serial.returncode == 0
    assert "workers" not in serial.stdout
    results = json.loads((tmp_path / "results.json").read_text())["submissions"]
    for sid, expected in parallel["submissions"].items():
        assert results[sid]["score"] == expected["score"]
        assert {c: (r["status"], r["points"]) for c, r in results[sid]["checks"].items()} == {
            c: (r["status"], r["points"]) for c, r in expected["checks"].items()
        }

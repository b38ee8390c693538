"""The harness's verdicts equal a by-hand grading's, check by check, on a corpus of realistic
submissions (tests/corpus/, graded by the independent oracle in tests/oracle/)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib

import pytest

from grader.domain.settings import Settings
from tests.cli import ROOT, run_grader

pytestmark = pytest.mark.integration

CORPUS = ROOT / "tests" / "corpus"
ORACLE = ROOT / "tests" / "oracle" / "oracle.py"
RUBRIC = ROOT / "grader" / "domain" / "rubric.toml"
# The reference CNN's trained weights, committed with a bundled example; every corpus entry
# without a training half serves them.
SHARED_MODEL = ROOT / "submissions" / "serve-token-auth" / "serve" / "mnist_cnn.pt"
ROW = re.compile(r"^\| ([a-z0-9-]+) \| (\d+) \| (shared|own) \| .+ \|$")


def corpus_table() -> dict[str, tuple[int, str]]:
    """entry: (expected score, "shared" or "own" model), from the corpus README's table."""
    rows = (ROW.match(line) for line in (CORPUS / "README.md").read_text().splitlines())
    return {row[1]: (int(row[2]), row[3]) for row in rows if row}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The corpus graded by the harness and by the oracle, with the wall time of each."""
    corpus = tmp_path_factory.mktemp("corpus")
    for name, (_, model) in corpus_table().items():
        shutil.copytree(CORPUS / name, corpus / name, symlinks=True)
        if model == "shared":
            shutil.copyfile(SHARED_MODEL, corpus / name / "serve" / "mnist_cnn.pt")
    entries = sorted(p for p in corpus.iterdir())
    report_dir = tmp_path_factory.mktemp("reports")
    # Tagging the offline stand-ins under the public names first lets the oracle's plain
    # `docker build` find every base image, as on a student's machine, while the harness runs.
    prefetch = run_grader("images", "prefetch", str(corpus), timeout=1800)
    assert prefetch.returncode == 0, prefetch.stdout[-3000:] + prefetch.stderr[-3000:]
    profile = tomllib.loads(RUBRIC.read_text())["profiles"]["offline"]
    verdicts = corpus.parent / "oracle.json"
    started = time.monotonic()
    with verdicts.open("w") as out, (corpus.parent / "oracle.log").open("w") as log:
        oracle = subprocess.Popen(
            [
                sys.executable, str(ORACLE),
                "--dataset", str(Settings.from_env().datasets_dir / profile["dataset"]),
                "--rubric", str(RUBRIC), "--profile", "offline", "--jobs", "2",
                *map(str, entries),
            ],
            stdout=out, stderr=log,
        )  # fmt: skip
    try:
        harness = run_grader(
            "grade", str(corpus), "-j", "auto", "--report-dir", str(report_dir), timeout=3600
        )
        harness_seconds = time.monotonic() - started
        oracle.wait(timeout=3600)
    finally:
        oracle.terminate()  # a no-op when it has ended; else it removes what it made
        oracle.wait(timeout=120)
    both_seconds = time.monotonic() - started
    assert harness.returncode == 0, harness.stdout[-3000:] + harness.stderr[-3000:]
    assert oracle.returncode == 0, (corpus.parent / "oracle.log").read_text()[-3000:]
    print(f"corpus: harness {harness_seconds:.0f} s, harness and oracle {both_seconds:.0f} s")
    results = json.loads((report_dir / "results.json").read_text())["submissions"]
    return results, json.loads(verdicts.read_text())


def test_the_corpus_is_large_and_documented():
    table = corpus_table()
    assert len(table) >= 20
    assert set(table) == {p.name for p in CORPUS.iterdir() if p.is_dir()}
    for name, (score, model) in table.items():
        first_line = (CORPUS / name / "README.md").read_text().splitlines()[0]
        assert f"{score}/100" in first_line, name
        assert (model == "shared") == ("shared trained model" in first_line), name


def test_the_harness_agrees_with_the_oracle_on_every_check(graded):
    harness, oracle = graded
    assert set(harness) == set(oracle) == set(corpus_table())
    for name in sorted(oracle):
        for check_id, verdict in oracle[name]["checks"].items():
            check = harness[name]["checks"][check_id]
            passed = check["status"] == "passed"  # a skip is the oracle's failure too
            assert passed == verdict["passed"], (
                f"{name}: {check_id}: the harness says {check['status']} "
                f"({check['message'][:500]!r}) but the oracle says "
                f"{'passed' if verdict['passed'] else 'failed'} ({verdict['reason'][:500]!r})"
            )


def test_the_harness_scores_what_the_corpus_readme_says(graded):
    harness, _ = graded
    scores = {name: harness[name]["score"] for name in harness}
    assert scores == {name: score for name, (score, _) in corpus_table().items()}


@pytest.mark.parametrize(
    ("entry", "hint", "phrase"),
    [
        ("serve-crlf-entrypoint", "crlf-line-endings", "CRLF"),
        ("serve-wrong-port", "server-wrong-port", "8080"),
        ("serve-loopback-bind", "server-loopback", "0.0.0.0"),
    ],
)
def test_broken_entries_get_the_hint_that_explains_them(graded, entry, hint, phrase):
    from grader.domain.hints import hints_for
    from grader.domain.results import submission_from_json

    harness, _ = graded
    result = submission_from_json(harness[entry])
    for language in ("en", "zh"):
        hints = hints_for(result, language)
        assert [found.id for found in hints] == [hint]
        assert phrase in hints[0].text


def test_servers_that_stay_unreachable_are_told_why_without_waiting_out_the_limit(graded):
    harness, _ = graded
    ready_limit = tomllib.loads(RUBRIC.read_text())["profiles"]["offline"]["limits"][
        "server_ready_seconds"
    ]
    wrong_port = harness["serve-wrong-port"]["checks"]["serve.ping"]
    assert wrong_port["status"] == "failed"
    assert "8000" in wrong_port["message"] and "another port" in wrong_port["message"]
    assert wrong_port["duration_s"] < ready_limit / 2
    crlf = harness["serve-crlf-entrypoint"]["checks"]["serve.ping"]
    assert "CRLF" in crlf["message"] and "could not be executed" in crlf["message"]

from __future__ import annotations

import base64
import csv
import io
import json

import lxml.html

from grader.domain.results import CheckResult, GradingReport, WrongDigit
from grader.reports.files import (
    gradebook_csv,
    gradescope_results,
    junit_xml,
    summary_lines,
    write_reports,
)
from grader.stages.serving import png


def sample_report(tmp_path):
    report = GradingReport(
        run_id="r1", profile="offline", rubric="rubric.toml", harness_version="0"
    )
    good = report.submission("alice", tmp_path / "alice", tmp_path / "a")
    good.checks["train.build"] = CheckResult(
        "train.build", "Builds", "passed", 10, 10, duration_s=1.5
    )
    bad = report.submission("bob & <co>", tmp_path / "bob", tmp_path / "b")
    bad.checks["train.build"] = CheckResult(
        "train.build",
        "Builds",
        "failed",
        0,
        10,
        message='COPY failed: file not found: "requirements.txt"',
        log_excerpt="Step 3/5\n\x1b[0m",
    )
    bad.checks["train.run"] = CheckResult(
        "train.run", "Runs", "skipped", 0, 10, message="skipped: the training image did not build"
    )
    bad.checks["train.model_artifact"] = CheckResult(
        "train.model_artifact", "Model", "error", 0, 5, message="the grader could not run this"
    )
    bad.note("base image x was stood in")
    bad.flag("reported accuracy 0.99 is far above the measured 0.10")
    good.student_name = "Zhang San"
    good.training_curve = {"loss": [2.3, 0.9, 0.4], "accuracy": [0.9, 0.95]}
    good.wrong_digits = [WrongDigit(3, 7, 2, base64.b64encode(png(bytes(784))).decode())]
    return report


def test_junit_matches_schema_and_carries_points(tmp_path, junit_schema):
    tree = junit_schema(junit_xml(sample_report(tmp_path)))
    suites = tree.findall("testsuite")
    assert [s.get("name") for s in suites] == ["alice", "bob & <co>"]
    props = {p.get("name"): p.get("value") for p in suites[1].find("properties")}
    assert props["score"] == "0" and props["max_score"] == "25"
    assert props["note.1"] == "base image x was stood in"
    assert props["flag.1"] == "reported accuracy 0.99 is far above the measured 0.10"
    case = suites[1].find("testcase")
    assert case.get("name") == "train.build" and case.get("classname") == "bob & <co>"
    points = {p.get("name"): p.get("value") for p in case.find("properties")}
    assert points == {"points": "0", "max_points": "10"}
    assert "requirements.txt" in case.find("failure").get("message")
    assert suites[1].findall("testcase")[1].find("skipped") is not None
    assert suites[1].findall("testcase")[2].find("error") is not None
    assert suites[1].get("failures") == "1" and suites[1].get("errors") == "1"


def test_results_json_and_atomic_write(tmp_path):
    report = sample_report(tmp_path)
    write_reports(report, tmp_path / "reports")
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    bob = data["submissions"]["bob & <co>"]
    assert bob["score"] == 0 and bob["max_score"] == 25
    assert bob["flags"] == ["reported accuracy 0.99 is far above the measured 0.10"]
    assert bob["checks"]["train.build"]["status"] == "failed"
    assert bob["checks"]["train.run"]["message"].startswith("skipped:")
    assert data["submissions"]["alice"]["checks"]["train.build"]["duration_s"] == 1.5
    written = sorted(str(p.relative_to(tmp_path / "reports")) for p in
                     (tmp_path / "reports").rglob("*") if p.is_file())  # fmt: skip
    assert written == [
        "gradebook.csv",
        "gradescope/alice/results.json",
        "gradescope/bob-co/results.json",
        "junit.xml",
        "report.html",
        "results.json",
    ]


def test_summary_lists_what_was_lost(tmp_path):
    lines = summary_lines(sample_report(tmp_path))
    assert lines[1].split() == ["alice", "10/10", "-"]
    assert "0/25" in lines[2]
    assert "train.build (COPY failed: file not found" in lines[2]
    assert "train.model_artifact" not in lines[2]  # the harness's error is not a lost point
    assert lines[2].endswith("; 1 later check skipped")
    assert lines[3].split() == ["FLAG", "reported", "accuracy", "0.99", "is", "far", "above",
                                "the", "measured", "0.10"]  # fmt: skip
    assert lines[4].split()[:2] == ["ERROR", "train.model_artifact"]
    assert lines[5].startswith("infrastructure errors") and lines[5].endswith(": bob & <co>")


def test_gradebook_parses_back(tmp_path):
    rows = list(csv.DictReader(io.StringIO(gradebook_csv(sample_report(tmp_path)))))
    assert list(rows[0]) == [
        "submission_id", "student_name", "score", "max_score", "flags",
        "train.build", "train.run", "train.model_artifact",
    ]  # fmt: skip
    assert rows[0]["student_name"] == "Zhang San" and rows[0]["train.build"] == "10"
    assert rows[0]["train.run"] == ""  # not graded for this submission
    assert (rows[1]["submission_id"], rows[1]["score"], rows[1]["max_score"]) == (
        "bob & <co>", "0", "25",
    )  # fmt: skip
    assert rows[1]["flags"] == "reported accuracy 0.99 is far above the measured 0.10"


def test_gradescope_results_conform(tmp_path, gradescope_schema):
    report = sample_report(tmp_path)
    for result in report.submissions.values():
        gradescope_schema(gradescope_results(result))
    bob = gradescope_results(report.submissions["bob & <co>"])
    assert [t["status"] for t in bob["tests"]] == ["failed", "failed", "failed"]
    assert bob["tests"][0]["name"] == "train.build: Builds"
    assert "requirements.txt" in bob["tests"][0]["output"]
    assert bob["output"].splitlines()[:2] == [
        "0/25 points", "FLAG: reported accuracy 0.99 is far above the measured 0.10",
    ]  # fmt: skip


def test_html_report_is_self_contained(tmp_path):
    write_reports(sample_report(tmp_path), tmp_path)
    text = (tmp_path / "report.html").read_text()
    page = lxml.html.fromstring(text)
    assert page.cssselect("#score-distribution svg rect.bar")
    assert len(page.cssselect("#pass-rates svg rect.bar")) == 3
    assert [s.get("id") for s in page.cssselect("section.submission")] == [
        "sub-alice",
        "sub-bob-co",
    ]
    assert page.cssselect("#sub-alice .training-curve svg polyline")
    (image,) = page.cssselect("#sub-alice img.wrong-digit")
    assert image.get("src").startswith("data:image/png;base64,")
    assert "bob &amp; &lt;co&gt;" in text  # escaped, never markup
    assert page.cssselect("#sub-bob-co details pre")
    assert page.cssselect("#sub-bob-co .flag")
    links = [e.get("src") or e.get("href") for e in page.iter() if e.get("src") or e.get("href")]
    assert all(link.startswith(("data:", "#")) for link in links)

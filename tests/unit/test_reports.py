from __future__ import annotations

import json

from grader.reports import junit_xml, summary_lines, write_reports
from grader.results import CheckResult, GradingReport


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
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["junit.xml", "results.json"]


def test_summary_lists_what_was_lost(tmp_path):
    lines = summary_lines(sample_report(tmp_path))
    assert lines[1].split() == ["alice", "10/10", "-"]
    assert "0/25" in lines[2]
    assert "train.build (COPY failed: file not found" in lines[2]
    assert "train.model_artifact (the grader could not run this)" in lines[2]
    assert lines[2].endswith("; 1 later check skipped")
    assert lines[3].split() == ["FLAG", "reported", "accuracy", "0.99", "is", "far", "above",
                                "the", "measured", "0.10"]  # fmt: skip

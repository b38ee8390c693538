"""Writing reports from the result model.

`results.json` and `junit.xml` (CI), `gradebook.csv` (an LMS), `gradescope/<id>/results.json`
(Gradescope's autograder format), `report.html` (people) and the terminal table.

Files are written atomically (temporary file, then rename), so a reader or a killed run never
leaves half a report behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from junit_xml import TestCase, TestSuite, to_xml_report_string

from grader.domain.inert import spreadsheet_safe, terminal_safe
from grader.domain.results import GradingReport, SubmissionResult
from grader.domain.submission import slugify
from grader.reports.html import render_html


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_results(report: GradingReport, report_dir: Path) -> None:
    """The machine-readable reports, cheap enough to rewrite after every check."""
    write_atomically(report_dir / "results.json", json.dumps(report.to_json(), indent=2) + "\n")
    write_atomically(report_dir / "junit.xml", junit_xml(report))


def write_reports(report: GradingReport, report_dir: Path) -> None:
    """Every report; written when a submission is finished and when the run ends."""
    write_results(report, report_dir)
    write_atomically(report_dir / "gradebook.csv", gradebook_csv(report))
    for result in report.submissions.values():
        path = report_dir / "gradescope" / slugify(result.submission_id) / "results.json"
        write_atomically(path, json.dumps(gradescope_results(result), indent=2) + "\n")
    write_atomically(report_dir / "report.html", render_html(report))


def gradebook_csv(report: GradingReport) -> str:
    """One row per submission: identity, total, flags, then the points of every check."""
    check_ids = list(dict.fromkeys(c for r in report.submissions.values() for c in r.checks))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["submission_id", "student_name", "score", "max_score", "flags", *check_ids])
    for result in report.submissions.values():
        writer.writerow(
            [
                spreadsheet_safe(result.submission_id),
                spreadsheet_safe(result.student_name or ""),
                _points(result.score),
                _points(result.max_score),
                spreadsheet_safe(" | ".join(result.flags)),
                *(
                    _points(result.checks[c].points) if c in result.checks else ""
                    for c in check_ids
                ),
            ]
        )
    return buffer.getvalue()


def gradescope_results(result: SubmissionResult) -> dict[str, Any]:
    """Gradescope's autograder `results.json` for one submission."""
    tests = []
    for number, check in enumerate(result.checks.values(), start=1):
        output = "\n\n".join(part for part in (check.message, check.log_excerpt) if part)
        tests.append(
            {
                "name": f"{check.check_id}: {check.title}",
                "number": str(number),
                "score": check.points,
                "max_score": check.max_points,
                "status": "passed" if check.status == "passed" else "failed",
                "output": output or "passed",
                "visibility": "visible",
            }
        )
    summary = [f"{_points(result.score)}/{_points(result.max_score)} points"]
    summary += [f"FLAG: {flag}" for flag in result.flags]
    summary += result.notes
    return {
        "score": result.score,
        "execution_time": round(sum(c.duration_s for c in result.checks.values())),
        "output": "\n".join(summary),
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def _points(value: float) -> str:
    return f"{value:g}"


def junit_xml(report: GradingReport) -> str:
    """One <testsuite> per submission, one <testcase> per check, points as properties."""
    suites = [_suite(result) for result in report.submissions.values()]
    root = ET.fromstring(to_xml_report_string(suites, prettyprint=False))
    root.set("name", f"lab5-grader {report.profile} {report.run_id}")
    for suite_element, result in zip(root.iter("testsuite"), report.submissions.values(),
                                     strict=True):  # fmt: skip
        for case_element in suite_element.iter("testcase"):
            check = result.checks[case_element.get("name", "")]
            properties = ET.Element("properties")
            for name, value in (("points", check.points), ("max_points", check.max_points)):
                ET.SubElement(properties, "property", name=name, value=_points(value))
            case_element.insert(0, properties)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _suite(result: SubmissionResult) -> TestSuite:
    cases = []
    for check in result.checks.values():
        case = TestCase(
            name=check.check_id,
            classname=result.submission_id,
            elapsed_sec=round(check.duration_s, 3),
        )
        detail = "\n".join(part for part in (check.message, check.log_excerpt) if part)
        if check.status == "failed":
            case.add_failure_info(message=check.message, output=detail)
        elif check.status == "skipped":
            case.add_skipped_info(message=check.message, output=detail)
        elif check.status == "error":
            case.add_error_info(message=check.message, output=detail)
        cases.append(case)
    properties = {"score": _points(result.score), "max_score": _points(result.max_score)}
    for number, flag in enumerate(result.flags, start=1):
        properties[f"flag.{number}"] = flag
    for number, note in enumerate(result.notes, start=1):
        properties[f"note.{number}"] = note
    return TestSuite(name=result.submission_id, test_cases=cases, properties=properties)


def summary_lines(report: GradingReport) -> list[str]:
    """A table a TA can read at a glance: score, then what was lost and why, per submission.

    Ids, messages and flags come from submissions: they are shown without control characters.
    """
    if not report.submissions:
        return ["no submission was graded"]
    shown = {sid: terminal_safe(sid) for sid in report.submissions}
    width = max(len(sid) for sid in shown.values())
    lines = [f"{'submission':<{width}}  {'score':>9}  lost points"]
    for raw_sid, result in report.submissions.items():
        sid = shown[raw_sid]
        lost = [
            f"{check.check_id} ({_first_line(check.message)})"
            for check in result.checks.values()
            if check.status == "failed"
        ]
        skipped = sum(check.status == "skipped" for check in result.checks.values())
        if skipped:
            lost.append(f"{skipped} later check{'s' if skipped > 1 else ''} skipped")
        score = f"{_points(result.score)}/{_points(result.max_score)}"
        lines.append(f"{sid:<{width}}  {score:>9}  {'; '.join(lost) or '-'}")
        lines.extend(f"{'':<{width}}  {'FLAG':>9}  {terminal_safe(flag)}" for flag in result.flags)
        lines.extend(
            f"{'':<{width}}  {'ERROR':>9}  {check.check_id} ({_first_line(check.message)})"
            for check in result.checks.values()
            if check.status == "error"
        )
    unfinished = [shown[sid] for sid, result in report.submissions.items()
                  if result.infrastructure_errors]  # fmt: skip
    if unfinished:
        lines.append(
            f"infrastructure errors (not the students'; not counted by --fail-under; grade these "
            f"again): {', '.join(unfinished)}"
        )
    return lines


def _first_line(text: str, limit: int = 90) -> str:
    line = terminal_safe(text.strip().splitlines()[0]) if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."

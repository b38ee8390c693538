"""Student-provided text reaches terminals and spreadsheets inert."""

from __future__ import annotations

import csv
import io
import unicodedata

import pytest

from grader.domain.inert import spreadsheet_safe, terminal_safe
from grader.domain.results import CheckResult, GradingReport
from grader.pytest_plugin.plugin import CheckFailure
from grader.pytest_plugin.progress import Progress
from grader.reports.files import gradebook_csv, summary_lines

ESC = "\x1b"
HOSTILE_ID = f"{ESC}[2J{ESC}]0;pwned{chr(7)}eve{ESC}[31m\r\u202etxt.exe"


def _controls(text: str, allowed: str = "") -> list[str]:
    return [c for c in text if unicodedata.category(c) == "Cc" and c not in allowed]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain id 2023010001", "plain id 2023010001"),
        ("Zhang San 张三", "Zhang San 张三"),
        (f"{ESC}[1;31mred{ESC}[0m text", "red text"),  # colours (CSI)
        (f"{ESC}]0;window title{chr(7)}after", "after"),  # title (OSC ended by BEL)
        (f"{ESC}]8;;http://x.test/{ESC}\\link{ESC}]8;;{ESC}\\", "link"),  # hyperlink (OSC, ST)
        (f"a{ESC}cb", "ab"),  # full reset (two-byte escape)
        ("over\rwrite", "over?write"),
        ("back\bspace", "back?space"),
        ("\x9b2Jc1", "c1"),  # the 8-bit CSI
        ("tab\there", "tab here"),
        ("two\nlines", "two lines"),
        ("\u202egnp.exe", "?gnp.exe"),  # right-to-left override
    ],
)
def test_terminal_safe_keeps_text_and_drops_sequences(raw, shown):
    assert terminal_safe(raw) == shown


def test_terminal_safe_can_keep_lines():
    text = terminal_safe(f"line 1{ESC}[K\nline 2\r\n", keep_newlines=True)
    assert text == "line 1\nline 2?\n"


def test_nothing_that_drives_a_terminal_survives():
    every_control = "".join(chr(c) for c in [*range(32), *range(127, 160)])
    text = terminal_safe(f"x{every_control}{HOSTILE_ID}y")
    assert _controls(text) == []
    assert "\u202e" not in text
    assert text.startswith("x") and text.endswith("eve??txt.exey")


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://evil.test","click")', '\'=HYPERLINK("http://evil.test","click")'),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Zhang San", "Zhang San"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_spreadsheet_safe_quotes_formula_starts(cell, written):
    assert spreadsheet_safe(cell) == written


def _report(tmp_path, sid: str, name: str) -> GradingReport:
    report = GradingReport(run_id="r1", profile="offline", rubric="r.toml", harness_version="0")
    result = report.submission(sid, tmp_path / "s", tmp_path / "a")
    result.student_name = name
    result.checks["train.build"] = CheckResult(
        "train.build", "Builds", "failed", 0, 10, message=f"{ESC}[2Jbuild failed{ESC}[0m\rX"
    )
    result.flag("=cmd|' /C calc'!A0 claimed")
    return report


def test_gradebook_cells_are_not_formulas(tmp_path):
    report = _report(tmp_path, '=HYPERLINK("http://evil.test")', "@SUM(A1:A2)")
    rows = list(csv.reader(io.StringIO(gradebook_csv(report))))
    header, row = rows
    assert row[header.index("submission_id")] == '\'=HYPERLINK("http://evil.test")'
    assert row[header.index("student_name")] == "'@SUM(A1:A2)"
    assert row[header.index("flags")] == "'=cmd|' /C calc'!A0 claimed"
    assert row[header.index("score")] == "0" and row[header.index("train.build")] == "0"


def test_the_summary_table_is_inert(tmp_path):
    lines = summary_lines(_report(tmp_path, HOSTILE_ID, "x"))
    for line in lines:
        assert _controls(line) == [] and "\u202e" not in line, repr(line)
    assert "eve" in lines[1] and "build failed" in lines[1]
    assert lines[1].split()[1] == "0/10"  # the columns still line up after the id


def test_progress_lines_and_board_are_inert():
    said: list[str] = []
    progress = Progress(said.append)
    progress.total = 1
    nodeid = f"grader/pytest_plugin/checks/test_train.py::test_build[{HOSTILE_ID}]"
    progress.check_started(nodeid)
    rows = progress.board(200)
    report = GradingReport(run_id="r1", profile="offline", rubric="r.toml", harness_version="0")
    progress.finished(report.submission(HOSTILE_ID, None, None))  # type: ignore[arg-type]
    for text in [*rows, *said]:
        assert _controls(text) == [] and "\u202e" not in text, repr(text)
    assert "eve" in rows[0] and "eve" in said[-1]


def test_a_failed_checks_message_is_inert_on_the_terminal_and_whole_in_reports():
    raw = f"The command '/bin/sh -c echo {ESC}]0;pwned{chr(7)}' returned a non-zero code: 1"
    failure = CheckFailure(raw, "log")
    assert failure.msg == "The command '/bin/sh -c echo ' returned a non-zero code: 1"
    assert failure.message == raw  # results.json and the reports keep what happened

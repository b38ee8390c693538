"""`grader grade --fail-under`: a student's own CI fails when the score is below a bar."""

from __future__ import annotations

import pytest

from tests.cli import run_grader

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_submission(tmp_path):
    """A hand-in with neither half: graded at once, 0 points."""
    folder = tmp_path / "2023999"
    folder.mkdir()
    (folder / "submission.toml").write_text('[student]\nname = "Nobody"\n')
    return folder


def test_a_score_below_the_bar_fails_the_run(empty_submission, tmp_path):
    done = run_grader(
        "grade", str(empty_submission), "--report-dir", str(tmp_path / "r"), "--fail-under", "60"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "grader: 1 submission scored below --fail-under 60: 2023999 (0/100)"
    )
    assert (tmp_path / "r" / "report.html").is_file()


def test_a_score_at_the_bar_passes(empty_submission, tmp_path):
    done = run_grader(
        "grade", str(empty_submission), "--report-dir", str(tmp_path / "r"), "--fail-under", "0"
    )
    assert done.returncode == 0, done.stderr

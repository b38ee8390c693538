"""`grader check`: a student grades their own submission and reads what to change."""

from __future__ import annotations

import pytest

from grader.domain.hints import CATALOG
from tests.cli import ROOT, run_grader

pytestmark = pytest.mark.integration

BROKEN_BUILD = str(ROOT / "submissions" / "broken-build")
# broken-build's Dockerfile copies requirements.txt, which the hand-in lacks: the hint names it.
COPY_HINT = {
    language: text.replace("{file}", "requirements.txt")
    for language, text in next(spec for spec in CATALOG if spec.id == "copy-missing").texts.items()
}


@pytest.mark.parametrize(
    ("language", "environment", "failed", "total"),
    [
        ("en", {"LANG": "C.UTF-8", "LC_ALL": ""}, "FAILED", "total"),
        ("zh", {"LANG": "zh_CN.UTF-8", "LC_ALL": ""}, "未通过", "总分"),
    ],
)
def test_a_failed_check_gets_a_hint_in_the_users_language(
    tmp_path, language, environment, failed, total
):
    done = run_grader("check", BROKEN_BUILD, "--report-dir", str(tmp_path), env=environment)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    row = next(line for line in lines if line.startswith("train.build "))
    assert row.split() == ["train.build", failed, "0/10"]
    assert next(line for line in lines if line.startswith(total)).split()[-1] == "5/100"
    assert f"- [train.build] {COPY_HINT[language]}" in lines
    assert f"{tmp_path}" in lines[-1]


def test_the_language_can_be_chosen(tmp_path):
    done = run_grader(
        "check", BROKEN_BUILD, "--lang", "zh", "--report-dir", str(tmp_path), env={"LANG": "C"}
    )
    assert f"- [train.build] {COPY_HINT['zh']}" in done.stdout.splitlines()


def test_a_folder_that_is_not_a_submission_is_refused(tmp_path):
    done = run_grader("check", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"grader: error: {tmp_path} is not a submission folder (it has no submission.toml, "
        "train/ or serve/); run `grader check` inside your submission, or give its path"
    )

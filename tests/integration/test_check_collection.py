"""The plugin refuses check modules that do not match the table of checks."""

from __future__ import annotations

import pytest

from grader.domain.settings import Settings

GRADER_HOME = Settings.from_env().home


@pytest.mark.integration
def test_checks_must_match_the_table_of_checks(pytester, monkeypatch):
    monkeypatch.setenv("GRADER_HOME", str(GRADER_HOME))  # pytester moves HOME
    pytester.mkdir("sub").joinpath("train").mkdir()
    pytester.makepyfile(
        """
        from grader.pytest_plugin.plugin import check

        @check("train.bogus")
        def test_x(grading):
            pass
        """
    )
    result = pytester.runpytest("--submissions", "sub", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: the check tests do not match the checks: "
            "test_checks_must_match_the_table_of_checks.py::test_x is marked "
            "@check('train.bogus'), which is no check of grader/domain/checks.py; *"
            "no collected test implements env.alpine_run (test_env.py::test_alpine_run), *"
        ]
    )

"""The code stays linted, typed and layered: ruff, mypy (strict, configured in pyproject.toml)
and import-linter (the layers contract in pyproject.toml) each exit 0 on the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The checkers come with the harness's `test` extra, next to the interpreter running the tests.
BIN = Path(sys.executable).parent


def run_checker(*command: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / command[0]
    if not tool.exists():
        pytest.fail(f"{command[0]} is not in {BIN}: install the harness with its test extra")
    return subprocess.run(
        [str(tool), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"`{' '.join(result.args)}` exited {result.returncode}:\n{result.stdout}{result.stderr}"


def test_ruff_finds_nothing() -> None:
    result = run_checker("ruff", "check", "grader", "tests", "bench", "conftest.py")
    assert result.returncode == 0, explain(result)


def test_mypy_strict_finds_no_type_error() -> None:
    # No arguments: the files and the strictness come from pyproject.toml; the cache it keeps in
    # .mypy_cache makes runs after the first one quick.
    result = run_checker("mypy")
    assert result.returncode == 0, explain(result)
    assert "Success: no issues found" in result.stdout, explain(result)


def test_imports_point_down_the_layers() -> None:
    result = run_checker("lint-imports")
    assert result.returncode == 0, explain(result)
    assert "0 broken" in result.stdout, explain(result)


def test_a_missing_checker_says_how_to_get_it():
    with pytest.raises(pytest.fail.Exception) as raised:
        run_checker("no-such-checker", "--version")
    assert str(raised.value) == (
        f"no-such-checker is not in {BIN}: install the harness with its test extra"
    )

"""The collected check tests held against the table of checks (grader/domain/checks.py)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from grader.domain.checks import Implementation, implementation_problems


def implementations(items: Iterable[pytest.Item], marker: str) -> list[Implementation]:
    """The test functions among `items` that carry `marker`, with the check id it names."""
    found = []
    for item in items:
        mark = item.get_closest_marker(marker)
        if mark is None:
            continue
        function = getattr(item, "originalname", item.name.split("[", 1)[0])
        check_id = str(mark.args[0]) if mark.args else ""
        found.append(Implementation(check_id, item.path.stem, function))
    return found


def validate_collection(items: Iterable[pytest.Item], marker: str) -> None:
    """Stop the run before anything is graded when the check tests do not match the table."""
    problems = implementation_problems(implementations(items, marker))
    if problems:
        raise pytest.UsageError("the check tests do not match the checks: " + "; ".join(problems))

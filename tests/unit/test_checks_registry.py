"""The check registry: the ids the product contract fixes, the rubric that only gives points,
the graded tests validated against it at collection, and the readers of it (progress, hints,
re-scoring)."""

from __future__ import annotations

import importlib

import pytest

from grader.domain.checks import (
    CHECKS,
    Implementation,
    check_by_id,
    check_by_test,
    check_ids,
    implementation_problems,
)
from grader.domain.errors import RubricError
from grader.domain.rubric import DEFAULT_RUBRIC, Targets, load_rubric
from grader.domain.verdicts import DERIVED_FLAGS
from grader.pytest_plugin.progress import check_of_nodeid

# The product contract's rubric (SPEC.md section 4): check ids in order, default points.
CONTRACT = {
    "env.alpine_run": 0,
    "env.alpine_interactive": 0,
    "train.dockerfile": 5,
    "train.build": 10,
    "train.run": 10,
    "train.reported_accuracy": 10,
    "train.model_artifact": 5,
    "serve.dockerfile": 5,
    "serve.build": 10,
    "serve.ping": 10,
    "serve.model_ready": 5,
    "serve.sample_prediction": 10,
    "serve.heldout_accuracy": 20,
}


def test_the_registry_holds_the_contracts_checks_in_order():
    assert check_ids() == tuple(CONTRACT)
    assert {check.id: check.points for check in CHECKS} == CONTRACT
    assert [check.stage for check in CHECKS] == [check_id.split(".")[0] for check_id in CONTRACT]


def test_the_default_rubric_gives_the_contracts_points():
    rubric = load_rubric()
    assert {spec.id: spec.points for spec in rubric.checks.values()} == CONTRACT
    assert list(rubric.checks) == list(CONTRACT)
    assert rubric.max_score == 100
    assert rubric.checks["serve.ping"].title == 'GET /ping answers {"status": "Healthy"}'


def test_only_the_accuracy_checks_are_judged_against_a_target():
    targets = {check.id: check.target for check in CHECKS if check.target is not None}
    assert targets == {
        "train.reported_accuracy": "reported_accuracy",
        "serve.heldout_accuracy": "heldout_accuracy",
    }
    assert set(targets.values()) <= set(Targets.__dataclass_fields__)


def test_every_entry_names_the_test_that_carries_its_marker():
    for check in CHECKS:
        module = importlib.import_module(f"grader.pytest_plugin.checks.{check.module}")
        function = getattr(module, check.function)
        markers = [
            mark.args for mark in getattr(function, "pytestmark", []) if mark.name == "check"
        ]
        assert markers == [(check.id,)], check.test


def test_lookups():
    assert check_by_id("serve.ping") is CHECKS[9]
    assert check_by_id("serve.pong") is None
    found = check_by_test("test_train", "test_run")
    assert found is not None and found.id == "train.run"
    found = check_by_test("test_serve", "test_dockerfile")  # the same name in another module
    assert found is not None and found.id == "serve.dockerfile"
    assert check_by_test("test_train", "test_ping") is None


def test_server_logs_explain_the_serving_checks_and_none_the_dockerfiles():
    logs = {check.id: check.logs for check in CHECKS}
    assert logs["serve.ping"] == logs["serve.heldout_accuracy"] == ("server.log",)
    assert logs["train.build"] == ("train-build.log",)
    assert logs["train.dockerfile"] == logs["serve.dockerfile"] == logs["env.alpine_run"] == ()


# --- the rubric gives points only -----------------------------------------------------------


def rubric_text(old: str, new: str) -> str:
    text = DEFAULT_RUBRIC.read_text()
    assert old in text
    return text.replace(old, new, 1)


def test_a_check_the_rubric_leaves_out_keeps_its_default_points(tmp_path):
    path = tmp_path / "rubric.toml"
    path.write_text(rubric_text('[checks."serve.ping"]\npoints = 10\n', ""))
    rubric = load_rubric(path)
    assert list(rubric.checks) == list(CONTRACT)
    assert rubric.checks["serve.ping"].points == 10
    assert rubric.checks["serve.ping"].title.startswith("GET /ping")


def test_the_rubric_changes_points_not_titles(tmp_path):
    path = tmp_path / "rubric.toml"
    path.write_text(
        rubric_text('[checks."serve.ping"]\npoints = 10', '[checks."serve.ping"]\npoints = 3')
    )
    assert load_rubric(path).checks["serve.ping"].points == 3
    assert load_rubric(path).max_score == 93
    path.write_text(
        rubric_text(
            '[checks."serve.ping"]\npoints = 10',
            '[checks."serve.ping"]\npoints = 10\ntitle = "Pong"',
        )
    )
    with pytest.raises(RubricError) as raised:
        load_rubric(path)
    assert str(raised.value) == (
        f'{path}: checks."serve.ping".title: unknown key; allowed here: points'
    )


def test_a_rubric_naming_an_unknown_check_is_one_line(tmp_path):
    path = tmp_path / "rubric.toml"
    path.write_text(rubric_text('[checks."serve.ping"]', '[checks."serve.pong"]'))
    with pytest.raises(RubricError) as raised:
        load_rubric(path)
    assert str(raised.value) == (
        f'{path}: checks."serve.pong": unknown check id; known ones are ' + ", ".join(CONTRACT)
    )


# --- graded tests against the registry --------------------------------------------------------


def every_check_implemented() -> list[Implementation]:
    modules = {"env": "test_env", "train": "test_train", "serve": "test_serve"}
    return [
        Implementation(check_id, modules[check_id.split(".")[0]], "test_" + check_id.split(".")[1])
        for check_id in CONTRACT
    ]


def test_the_real_layout_has_no_problem():
    assert implementation_problems(every_check_implemented()) == []
    # A test collected once per submission counts once.
    assert implementation_problems(every_check_implemented() * 3) == []


def test_a_marker_naming_no_check():
    found = [*every_check_implemented(), Implementation("train.bogus", "test_extra", "test_x")]
    assert implementation_problems(found) == [
        "test_extra.py::test_x is marked @check('train.bogus'), which is no check of "
        "grader/domain/checks.py; known checks: " + ", ".join(CONTRACT)
    ]


def test_a_check_on_two_tests_or_on_another_test():
    twice = [*every_check_implemented(), Implementation("serve.ping", "test_serve", "test_pong")]
    assert implementation_problems(twice) == [
        "check 'serve.ping' is marked on 2 tests (test_serve.py::test_ping, "
        "test_serve.py::test_pong); exactly one, test_serve.py::test_ping, may carry it"
    ]
    moved = [
        Implementation("serve.ping", "test_serve", "test_pong") if i.check_id == "serve.ping" else i
        for i in every_check_implemented()
    ]
    assert implementation_problems(moved) == []  # the marker, not the name, says which check


def test_checks_no_test_implements():
    found = [i for i in every_check_implemented() if i.module != "test_env"]
    assert implementation_problems(found) == [
        "no collected test implements env.alpine_run (test_env.py::test_alpine_run), "
        "env.alpine_interactive (test_env.py::test_alpine_interactive); grade with the check "
        "modules (--pyargs grader.pytest_plugin.checks)"
    ]


CONFTEST = """
from grader.pytest_plugin.registered import validate_collection

def pytest_collection_modifyitems(items):
    validate_collection(items, "check")
"""


def write_check_modules(pytester, rename=None):
    """One module per stage with a test per check, each run for two submissions."""
    pytester.makeconftest(CONFTEST)
    modules: dict[str, list[str]] = {}
    for check_id in CONTRACT:
        stage, name = check_id.split(".")
        function = rename.get(check_id, f"test_{name}") if rename else f"test_{name}"
        modules.setdefault(f"test_{stage}", ["import pytest"]).append(
            f'@pytest.mark.check("{check_id}")\n'
            '@pytest.mark.parametrize("sid", ["alice", "bob"])\n'
            f"def {function}(sid):\n    pass\n"
        )
    pytester.makepyfile(**{name: "\n\n".join(body) for name, body in modules.items()})


def test_collection_of_matching_check_modules_goes_on(pytester):
    write_check_modules(pytester)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2 * len(CONTRACT))


def test_a_course_may_name_its_check_tests_as_it_likes(pytester):
    write_check_modules(pytester, rename={"serve.ping": "test_pong"})
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2 * len(CONTRACT))


def test_collection_stops_when_a_check_is_carried_twice(pytester):
    write_check_modules(pytester)
    pytester.makepyfile(
        test_more='import pytest\n\n@pytest.mark.check("serve.ping")\ndef test_again():\n    pass\n'
    )
    result = pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "'serve.ping' is marked on 2 tests" in result.stderr.lines[0]
    assert "test_more.py::test_again" in result.stderr.lines[0]
    result.assert_outcomes()  # nothing ran


# --- readers of the table ---------------------------------------------------------------------


def test_progress_names_the_check_a_node_runs():
    assert check_of_nodeid("grader/pytest_plugin/checks/test_serve.py::test_dockerfile[a]") == (
        "serve.dockerfile"
    )
    assert check_of_nodeid("checks/test_train.py::test_dockerfile[a]") == "train.dockerfile"
    assert check_of_nodeid("test_env.py::test_alpine_interactive[b[1]]") == (
        "env.alpine_interactive"
    )
    # A test that implements no check shows as itself.
    assert check_of_nodeid("tests/test_other.py::test_something[a]") == "test_something"


def test_the_checks_integrity_flags_concern_are_checks():
    concerned = {check_id for checks in DERIVED_FLAGS.values() for check_id in checks}
    assert concerned and concerned <= set(CONTRACT)

"""Readiness verdicts that need no HTTP: a server container that exited (and why, from the
engine's state and its log), a server without published ports, and the lines of a long server
log worth showing. The container is a stand-in holding the engine's `State` as Docker reports it
(docs.docker.com, ContainerInspect: Status, ExitCode, OOMKilled)."""

from __future__ import annotations

from typing import Any

import pytest

from grader.engine.containers import RunningServer
from grader.stages.serving import (
    Server,
    _failure_lines,
    _stopped,
    exited_outcome,
    wait_healthy,
    wait_model_ready,
)


class Container:
    """What the engine tells of a container: its state and its log."""

    def __init__(self, state: dict[str, Any], log: str = "") -> None:
        self.attrs: dict[str, Any] = {"State": state}
        self.log = log

    def reload(self) -> None:
        pass

    def logs(self, tail: int = 40) -> bytes:
        return self.log.encode()


def _server(state: dict[str, Any], log: str = "") -> Server:
    return Server(RunningServer(Container(state, log), {8080: 0}), None)


def test_a_running_container_has_not_exited():
    assert exited_outcome(_server({"Status": "running", "ExitCode": 0})) is None


def test_an_exited_container_fails_with_its_code_its_log_and_why():
    outcome = exited_outcome(_server({"Status": "exited", "ExitCode": 3}, "java died\n"))
    assert outcome is not None and not outcome.ok
    assert "exited with code 3" in outcome.message
    assert "--foreground" in outcome.message  # the usual cause: torchserve --start returns
    assert outcome.log == "java died\n"
    assert outcome.reason is not None
    assert (outcome.reason.code, dict(outcome.reason.facts)) == ("exited", {"exit_code": 3})


def test_an_exit_code_that_is_not_a_number_is_unknown():
    outcome = exited_outcome(_server({"Status": "dead", "ExitCode": None}))
    assert outcome is not None and outcome.reason is not None
    assert dict(outcome.reason.facts) == {"exit_code": "unknown"}


def test_a_container_killed_for_memory_says_so():
    outcome = exited_outcome(_server({"Status": "exited", "ExitCode": 137, "OOMKilled": True}))
    assert outcome is not None and outcome.reason is not None
    assert "memory limit" in outcome.message
    assert (outcome.reason.code, dict(outcome.reason.facts)) == ("oom-killed", {"exit_code": 137})


def test_a_command_that_cannot_be_executed_is_named_with_crlf_advice():
    log = "exec /srv/start.sh: no such file or directory\n"
    outcome = exited_outcome(_server({"Status": "exited", "ExitCode": 127}, log))
    assert outcome is not None and outcome.reason is not None
    error = "exec /srv/start.sh: no such file or directory"
    assert (outcome.reason.code, dict(outcome.reason.facts)) == ("not-executable", {"error": error})
    assert f"({error})" in outcome.message and "LF line endings" in outcome.message


def test_a_stop_seen_while_the_engine_still_says_running_is_a_stop_of_unknown_code():
    outcome = _stopped(_server({"Status": "running", "ExitCode": 0}))
    assert not outcome.ok and outcome.message == "the server container stopped"
    assert outcome.reason is not None
    assert (outcome.reason.code, dict(outcome.reason.facts)) == ("exited", {"exit_code": "unknown"})


def test_a_stop_the_engine_reports_is_told_with_its_code():
    outcome = _stopped(_server({"Status": "exited", "ExitCode": 2}))
    assert "exited with code 2" in outcome.message


@pytest.mark.parametrize("wait", [wait_healthy, wait_model_ready])
def test_a_server_without_published_ports_fails_at_once(wait):
    args = (1.0,) if wait is wait_healthy else ("mnist", 1.0)
    outcome = wait(_server({"Status": "running", "ExitCode": 0}), *args)
    assert not outcome.ok and outcome.reason is not None and outcome.reason.code == "no-ports"


@pytest.mark.parametrize("wait", [wait_healthy, wait_model_ready])
def test_a_server_that_exited_fails_with_why_before_waiting(wait):
    args = (1.0,) if wait is wait_healthy else ("mnist", 1.0)
    outcome = wait(_server({"Status": "exited", "ExitCode": 1}), *args)
    assert outcome.reason is not None and outcome.reason.code == "exited"


LOG = [f"line {n}" for n in range(20)]


@pytest.mark.parametrize("word", ["Traceback", "Error", "Exception", "died"])
def test_failure_lines_are_three_either_side_of_an_error_word(word):
    log = LOG.copy()
    log[10] = f"worker {word} here"
    assert _failure_lines("\n".join(log)).splitlines() == log[7:14]


def test_failure_lines_stop_at_the_ends_of_the_log():
    log = LOG.copy()
    log[1], log[18] = "Error first", "Error last"
    assert _failure_lines("\n".join(log)).splitlines() == log[0:5] + log[15:20]


def test_failure_lines_are_case_sensitive_words_and_none_is_empty():
    log = LOG.copy()
    log[10] = "no error, no exception, nothing DIED"
    assert _failure_lines("\n".join(log)) == ""


def test_failure_lines_keep_the_last_sixty():
    log = [f"Error {n}" for n in range(100)]
    assert _failure_lines("\n".join(log)).splitlines() == log[40:]

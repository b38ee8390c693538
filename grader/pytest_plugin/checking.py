"""What a check module uses to grade (the `check` marker, `fail_check`), and how a check's
outcome is read back: passed, failed for the student's reason, skipped, or an infrastructure
error that is never the student's fault."""

from __future__ import annotations

from typing import NoReturn

import docker.errors
import pytest

from grader.domain.inert import terminal_safe
from grader.domain.reasons import Reason, UnknownReason, reason
from grader.domain.results import Status

CHECK_MARKER = "check"


# pytest's failure class is public only as the attribute `pytest.fail.Exception`, which a type
# checker cannot take for a base class.
class CheckFailure(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """A check that failed for a reason the student can act on; carries a log excerpt and the
    reason as data (grader/domain/reasons.py)."""

    def __init__(self, message: str, log: str = "", reason: Reason | None = None) -> None:
        # pytest prints its message on the terminal: shown inert, kept whole for the reports.
        super().__init__(terminal_safe(message, keep_newlines=True), pytrace=False)
        self.message = message
        self.log = log
        self.reason = reason


def fail_check(message: str, log: str = "", reason: Reason | None = None) -> NoReturn:
    __tracebackhide__ = True
    raise CheckFailure(message, log, reason)


def reason_of(call: pytest.CallInfo[None], check_id: str) -> Reason | None:
    """Why a check failed, as data with the check's id, when it failed for a known reason."""
    error = call.excinfo.value if call.excinfo is not None else None
    if isinstance(error, CheckFailure) and error.reason is not None:
        try:
            return error.reason.within(check_id)
        except UnknownReason:  # recording the failure matters more than its code
            return None
    if isinstance(error, docker.errors.APIError) and error.is_client_error():
        refused = (error.explanation or str(error)).strip()
        return reason(f"{check_id}/engine-refused", error=refused)
    return None


def check(check_id: str) -> pytest.MarkDecorator:
    """Mark a test as the rubric check `check_id`."""
    mark: pytest.MarkDecorator = getattr(pytest.mark, CHECK_MARKER)(check_id)
    return mark


def check_id_of(item: pytest.Item) -> str | None:
    """The rubric check a collected test grades, from its `check` marker."""
    marker = item.get_closest_marker(CHECK_MARKER)
    return None if marker is None else str(marker.args[0])


def outcome_of(call: pytest.CallInfo[None]) -> tuple[Status, str, str]:
    """A check's status, message and log excerpt, from how its call ended."""
    if call.excinfo is None:
        return "passed", "", ""
    error = call.excinfo.value
    if isinstance(error, CheckFailure):
        return "failed", error.message, error.log
    if isinstance(error, pytest.skip.Exception):
        return "skipped", str(error.msg), ""
    if isinstance(error, pytest.fail.Exception):
        return "failed", str(error.msg), ""
    return classify_exception(error)


INFRASTRUCTURE_ERROR = "infrastructure error"


def classify_exception(error: BaseException) -> tuple[Status, str, str]:
    """Who is to blame for an exception that escaped a check.

    The engine refusing a request for what the submission holds (a 4xx: no such executable, an
    invalid image reference) is the student's failure, with the engine's reason. Anything else
    (the engine unreachable or failing with a 5xx, an assertion or exception in the harness's own
    code) is an infrastructure error: never the student's fault, and never to the student's gain,
    since it scores no points and is listed apart for the TA to re-run.
    """
    if isinstance(error, docker.errors.APIError):
        reason = (error.explanation or str(error)).strip()
        if error.is_client_error():
            refused = f"the Docker engine refused a request for this submission: {reason}"
            return "failed", refused, ""
        if error.is_server_error():
            return "error", f"{INFRASTRUCTURE_ERROR}: the Docker engine failed: {reason}", ""
    described = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return "error", f"{INFRASTRUCTURE_ERROR}: the grader could not run this check ({described})", ""

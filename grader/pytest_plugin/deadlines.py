"""A check's deadline: check_seconds, or what is left of submission_seconds.

Passing it while the check still runs stops the submission's containers, so that a build,
training run, exec or HTTP call the check is blocked in returns; the check then fails naming the
limit, whatever it raised on the way out, and what it had measured is left out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import docker
import docker.errors
import requests

from grader.domain.reasons import Reason
from grader.domain.results import Flag, SubmissionResult, WrongDigit
from grader.engine.containers import RUN_LABEL, SUBMISSION_LABEL
from grader.engine.watchdog import Budget, Watchdog
from grader.pytest_plugin.checking import fail_check


class ContainersNotStopped(Exception):
    """A check ran out of time and the engine did not stop the submission's containers."""


@contextlib.contextmanager
def deadline(
    budget: Budget, result: SubmissionResult, check_id: str, stop: Callable[[], str | None]
) -> Iterator[None]:
    """Run the body under `budget`: `stop` (None, or why the engine could not stop the
    containers) is called from a watchdog thread when the budget runs out."""
    measured = (
        dict(result.measurements),
        list(result.integrity_flags),
        list(result.wrong_digits),
    )
    watchdog = Watchdog(budget.seconds, stop)
    watchdog.start()
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        watchdog.disarm()
        raise
    except BaseException:
        if not watchdog.disarm():
            raise
        _forget_partial(result, check_id, measured)
        ran_out(watchdog, budget)
    if watchdog.disarm():
        _forget_partial(result, check_id, measured)
        ran_out(watchdog, budget)


def _forget_partial(
    result: SubmissionResult,
    check_id: str,
    measured: tuple[dict[str, Any], list[Flag], list[WrongDigit]],
) -> None:
    """What a stopped check measured is partial (say, accuracy over the digits answered before
    the stop): it is left out, and so are flags drawn from it."""
    result.measurements, result.integrity_flags, result.wrong_digits = measured
    result.note(f"{check_id} was stopped at its time limit; what it had measured is left out")


def ran_out(watchdog: Watchdog, budget: Budget) -> NoReturn:
    __tracebackhide__ = True
    if watchdog.stop_problem is not None:
        raise ContainersNotStopped(
            f"the check ran past {budget.limit} ({budget.limit_seconds:g} s) and the Docker "
            f"engine did not stop the submission's containers: {watchdog.stop_problem}"
        ) from None
    if budget.limit == "check_seconds":
        fail_check(
            f"this check did not finish within {budget.limit_seconds:g} s (limit check_seconds) "
            "and was stopped, with the submission's containers; what it waited on (a build, the "
            "training, the server's answers) must finish well within that",
            reason=Reason("check-time", {"limit_s": budget.limit_seconds}),
        )
    fail_check(
        f"the submission used up its {budget.limit_seconds:g} s (limit submission_seconds) during "
        "this check, which was stopped with the submission's containers; the checks left were "
        "not run",
        reason=Reason("submission-time", {"limit_s": budget.limit_seconds}),
    )


def kill_containers(client: docker.DockerClient, run_id: str, submission_id: str) -> str | None:
    """Kill the submission's running containers; None, or why the engine could not."""
    labels = [f"{RUN_LABEL}={run_id}", f"{SUBMISSION_LABEL}={submission_id}"]
    selector: dict[str, str | list[str] | bool] = {"label": labels}
    try:
        for container in client.containers.list(filters=selector, ignore_removed=True):
            with contextlib.suppress(docker.errors.APIError):  # it may have exited
                container.kill()
    except (docker.errors.DockerException, requests.RequestException) as error:
        return str(error)
    return None

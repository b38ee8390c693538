"""Stored results per submission, so that unchanged work is never graded twice.

Each finished submission is written to `<report-dir>/submissions/<slug>.json` with a key over
what its grading depends on: the submission's files, the harness version, the dataset, the
profile's limits and the set of checks. Points and targets are not in the key: when only they
change, the stored result is re-scored from its measurements without running containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

from grader import __version__
from grader.domain.checks import check_by_id
from grader.domain.dataset import Dataset
from grader.domain.errors import GraderError
from grader.domain.reasons import Failure
from grader.domain.results import SubmissionResult, submission_from_json, submission_to_json
from grader.domain.rubric import Profile, Rubric
from grader.domain.submission import slugify
from grader.domain.verdicts import heldout_accuracy_failure, reported_accuracy_failure, review
from grader.reports.files import write_atomically

CLEARED_FILE = "flags-cleared.json"


def submission_key(
    root: Path, rubric: Rubric, profile: Profile, dataset: Dataset, hidden: str | None = None
) -> str:
    """`hidden` names the hidden digits when they are not the dataset's own draw of any run (a
    `--hidden-dir`, a chosen `--seed`): a result graded on other digits is then not taken."""
    digest = hashlib.sha256()
    setting = {
        "harness": __version__,
        "checks": sorted(rubric.checks),
        "profile": profile.name,
        "dataset": profile.dataset,
        "data": hashlib.sha256((dataset.root / "dataset.json").read_bytes()).hexdigest(),
        "limits": asdict(profile.limits),
    }
    if hidden is not None:
        setting["hidden"] = hidden
    digest.update(json.dumps(setting, sort_keys=True).encode())
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"link {relative} -> {os.readlink(path)}\n".encode())
        elif path.is_file():
            digest.update(
                f"file {relative} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode()
            )
    return digest.hexdigest()


def stored_path(report_dir: Path, submission_id: str) -> Path:
    return report_dir / "submissions" / f"{slugify(submission_id)}.json"


def store(report_dir: Path, result: SubmissionResult, key: str) -> None:
    document = {"key": key, "result": submission_to_json(result)}
    write_atomically(stored_path(report_dir, result.submission_id), json.dumps(document) + "\n")


def load(report_dir: Path, submission_id: str, key: str) -> SubmissionResult | None:
    """The stored result when its key matches, else None (absent, stale or unreadable)."""
    path = stored_path(report_dir, submission_id)
    try:
        document = json.loads(path.read_text())
        if document.get("key") != key:
            return None
        return submission_from_json(document["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def rescore(
    result: SubmissionResult,
    rubric: Rubric,
    profile: Profile,
    cleared: Collection[str] = (),
) -> SubmissionResult:
    """Apply the current points, targets and integrity rules to a stored result; `cleared` are
    the ids of its flags a TA cleared. A check judged against a target (see the table of checks)
    is judged again from the measurement of the same name; every other keeps its status."""
    measured = result.measurements
    for check_id, check in result.checks.items():
        spec = rubric.checks[check_id]
        check.title, check.max_points = spec.title, spec.points
        target = _target_of(check_id)
        decided = check.status in ("passed", "failed")
        if target is None or not decided or target not in measured:
            check.points = spec.points if check.status == "passed" else 0.0
            continue
        verdict = JUDGED_AGAIN[target](measured, getattr(profile.targets, target), check.message)
        if isinstance(verdict, Failure):
            check.status, check.message = "failed", verdict.message
            check.failed_for(verdict.reason)
        elif verdict is None:
            check.status, check.message = "passed", ""
            check.failed_for(None)
        check.points = 0.0 if verdict else spec.points
    review(result, profile.targets, rubric.integrity_penalty, cleared)
    return result


def _target_of(check_id: str) -> str | None:
    check = check_by_id(check_id)
    return check.target if check is not None else None


def _reported_again(measured: dict[str, Any], target: float, message: str) -> Failure | None:
    where = measured.get("reported_accuracy_where", "reported")
    return reported_accuracy_failure(measured["reported_accuracy"], where, target)


def _heldout_again(measured: dict[str, Any], target: float, message: str) -> Failure | str | None:
    if measured.get("heldout_errors", 0) < measured.get("heldout_total", 0):
        return heldout_accuracy_failure(measured, target)
    return message  # every prediction failed: no accuracy to judge, the failure stands


# The target's name -> the verdict on its measurement: (measurements, target, message as
# graded) -> the failure, the message as graded when that failure stands as it was, or None
# when the target is met.
JUDGED_AGAIN: dict[str, Callable[[dict[str, Any], float, str], Failure | str | None]] = {
    "reported_accuracy": _reported_again,
    "heldout_accuracy": _heldout_again,
}


# --- a TA's decisions on flags, kept apart from the results that re-scoring rewrites ----------


def load_cleared(report_dir: Path) -> dict[str, set[str]]:
    """Submission id -> ids of its flags a TA cleared (nothing when the file is absent)."""
    path = report_dir / CLEARED_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise GraderError(
            f"{path}: unreadable ({error}); fix or remove it (it holds the flags TAs cleared)"
        ) from None
    cleared = document.get("cleared") if isinstance(document, dict) else None
    if not isinstance(cleared, dict):
        raise GraderError(f'{path}: no "cleared" table; fix or remove it')
    return {str(sid): {str(f) for f in flags} for sid, flags in cleared.items()}


def clear_flag(report_dir: Path, submission_id: str, flag_id: str, note: str = "") -> None:
    """Record that a TA cleared a flag; it stays cleared through re-grading and re-scoring."""
    path = report_dir / CLEARED_FILE
    document: dict[str, Any] = {"cleared": {}}
    if path.is_file():
        load_cleared(report_dir)  # refuse to overwrite a file that cannot be read
        document = json.loads(path.read_text())
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "note": note}
    document["cleared"].setdefault(submission_id, {})[flag_id] = entry
    write_atomically(path, json.dumps(document, indent=2) + "\n")

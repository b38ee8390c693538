"""Which submissions of a batch are graded, and which are taken from their stored results.

Every way of grading (on this host, on a Ray cluster) splits a batch here, so that the same
hand-ins are taken from the same stored results under the same keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.domain.dataset import Dataset, read_hidden_dir
from grader.domain.handins import Intake
from grader.domain.results import SubmissionResult
from grader.domain.rubric import Profile, Rubric
from grader.reports.store import load, rescore, submission_key


@dataclass
class Partition:
    """A batch split: hand-ins not taken in, results taken from storage, submissions to grade."""

    refused: list[Intake] = field(default_factory=list)
    stored: dict[str, SubmissionResult] = field(default_factory=dict)  # id -> re-scored result
    to_grade: list[Intake] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # id -> key of what its grading depends on

    def lines(self) -> list[str]:
        """What a run says about the split before it grades."""
        said = [
            f"{intake.id}: not taken in, scored 0 ({intake.problem})" for intake in self.refused
        ]
        if self.stored:
            said.append(
                f"{len(self.stored)} unchanged submission(s) taken from stored results "
                "(--force grades them again)"
            )
        return said


def hidden_key(seed: int | None, hidden_dir: Path | None) -> str | None:
    """What the hidden digits depend on beyond the dataset, for the stored results' key: a seed
    chosen on the command line (None when the run drew its own) and the course's own digits."""
    parts = []
    if seed is not None:
        parts.append(f"seed {seed}")
    if hidden_dir is not None:
        digits = read_hidden_dir(hidden_dir)
        data = hashlib.sha256(digits.pixels + digits.labels).hexdigest()
        parts.append(f"hidden {data}")
    return "; ".join(parts) or None


def partition(
    intakes: Collection[Intake],
    report_dir: Path,
    rubric: Rubric,
    profile: Profile,
    dataset: Dataset,
    *,
    hidden: str | None,
    force: bool,
    cleared: Mapping[str, Collection[str]],
) -> Partition:
    """Split a batch: a submission whose stored result is still valid (same key) is taken from
    it, re-scored under this run's rubric and the flags a TA cleared, unless `force`."""
    split = Partition()
    for intake in intakes:
        if intake.submission is None:
            split.refused.append(intake)
            continue
        key = submission_key(intake.path, rubric, profile, dataset, hidden)
        split.keys[intake.id] = key
        stored = None if force else load(report_dir, intake.id, key)
        if stored is None:
            split.to_grade.append(intake)
        else:
            split.stored[intake.id] = rescore(
                stored, rubric, profile, cleared.get(intake.id, set())
            )
    return split

"""Taking a batch in: every hand-in copied privately and loaded, with ids unique in the run.

What goes wrong with one hand-in (a refused archive or folder, a bad manifest, anything
unforeseen) is kept with that hand-in, to be scored 0 with the reason; it never stops the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from grader.domain.errors import GraderError, ManifestError
from grader.domain.intake import IntakeRefused, archive_stem, is_archive, take_in
from grader.domain.submission import Submission, load_submission, slugify


@dataclass(frozen=True)
class Intake:
    """A submission found on the command line: its private copy, loaded or with the reason it
    can't be, and what intake noticed (an id shared with another submission)."""

    id: str  # unique in the run, and so is the file-name form of it (slugify)
    path: Path  # the private copy that is graded
    submission: Submission | None
    problem: GraderError | None  # an invalid submission.toml or a refused archive or folder
    source: Path | None = None  # what was handed in
    notes: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


def take_in_all(paths: list[Path], unpack_into: Path, stage_into: Path) -> list[Intake]:
    """Take every submission in: a private copy, loaded. What goes wrong with one (a refused
    archive or folder, a bad manifest, anything unforeseen) is that submission's alone."""
    taken: list[Intake] = []
    for path in paths:
        submission: Submission | None = None
        problem: GraderError | None = None
        folder = path
        name = archive_stem(path) if is_archive(path) else path.name
        try:
            folder, name = take_in(path, unpack_into, stage_into)
            submission = load_submission(folder, default_id=name)
        except (ManifestError, IntakeRefused) as error:
            problem = error
        except Exception as error:  # whatever a hand-in provokes stops only that hand-in
            problem = IntakeRefused(
                f"{path.name}: could not be taken in ({type(error).__name__}: {error})"
            )
        submission_id = submission.id if submission else name
        taken.append(Intake(submission_id, folder, submission, problem, source=path))
    return distinct(taken)


def distinct(intakes: list[Intake]) -> list[Intake]:
    """The intakes with ids, and file names made of them, unique: a later one whose id or file
    name is taken gets its folder's name as a suffix and a note; an id that several submissions
    claim flags each of them. Nothing of one submission ever replaces another's."""
    claims: dict[str, list[Intake]] = {}
    for intake in intakes:
        claims.setdefault(intake.id, []).append(intake)
    ids: set[str] = set()
    slugs: dict[str, str] = {}  # file name -> the id that has it
    distinct = []
    for intake in intakes:
        notes, flags = list(intake.notes), list(intake.flags)
        claimants = claims[intake.id]
        if len(claimants) > 1:
            others = ", ".join(str(i.source) for i in claimants if i is not intake)
            flags.append(
                f"student id {intake.id!r} is claimed by {len(claimants)} submissions: this one "
                f"({intake.source}) and {others}; each was graded apart and nothing of one "
                "replaced the other's; check who handed in what"
            )
        unique = intake.id
        suffix = intake.source.name if intake.source else "2"
        number = 1
        while unique in ids or slugify(unique) in slugs:
            number += 1
            unique = (
                f"{intake.id} ({suffix})" if number == 2 else f"{intake.id} ({suffix} {number})"
            )
        if unique != intake.id:
            clash = slugs.get(slugify(intake.id), intake.id)
            notes.append(
                f"graded as {unique!r}: {intake.id!r} and the earlier submission {clash!r} would "
                f"share the name {slugify(intake.id)!r} of their artifacts, stored results and "
                "images"
            )
        ids.add(unique)
        slugs[slugify(unique)] = unique
        submission = intake.submission
        if submission is not None and unique != submission.id:
            submission = replace(submission, id=unique)
        distinct.append(
            replace(
                intake, id=unique, submission=submission, notes=tuple(notes), flags=tuple(flags)
            )
        )
    return distinct

"""Taking a batch in: every hand-in copied privately and loaded, with ids unique in the run.

Every way of grading (on this host, on a Ray cluster) takes a batch in here, so that the same
hand-ins get the same ids, notes and flags. A hand-in that cannot be taken in (a refused archive
or folder, an invalid `submission.toml`, anything unforeseen) is kept with its reason and scored
0 without running anything; it never stops the batch.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from grader.domain.checks import check_by_id
from grader.domain.errors import GraderError, ManifestError
from grader.domain.intake import ArchiveRefused, IntakeRefused, archive_stem, is_archive, take_in
from grader.domain.reasons import Reason
from grader.domain.results import CheckResult, GradingReport, SubmissionResult
from grader.domain.rubric import Profile, Rubric
from grader.domain.submission import Submission, load_submission, slugify
from grader.domain.verdicts import review


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
        except ManifestError as error:
            # named as handed in: the private copy is the run's, and gone after it
            problem = ManifestError(str(error).replace(str(folder), str(path)))
        except IntakeRefused as error:
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
    unique_intakes = []
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
        unique_intakes.append(
            replace(
                intake, id=unique, submission=submission, notes=tuple(notes), flags=tuple(flags)
            )
        )
    return unique_intakes


def refusal(intake: Intake) -> str | None:
    """Why a hand-in was not taken in and what to do about it; None when it was taken in."""
    if intake.submission is not None:
        return None
    fix = "; fix submission.toml and hand in again"
    if isinstance(intake.problem, ArchiveRefused):
        fix = "; hand in an archive of regular files inside one folder"
    elif isinstance(intake.problem, IntakeRefused):
        fix = ""  # the reason says what to leave out
    return f"{intake.problem}{fix}"


def start_result(report: GradingReport, intake: Intake, report_dir: Path) -> SubmissionResult:
    """The submission's result in `report` (made on first use, in the batch's order), with what
    intake and the manifest noticed."""
    result = report.submission(
        intake.id, intake.source or intake.path, report_dir / "artifacts" / slugify(intake.id)
    )
    for note in intake.notes:
        result.note(note)
    for flag in intake.flags:
        result.flag(flag, "student-id")
    if intake.submission:
        result.student_name = intake.submission.student_name
        for warning in intake.submission.warnings:
            result.note(warning)
    return result


def refused_result(
    report: GradingReport,
    intake: Intake,
    report_dir: Path,
    rubric: Rubric,
    profile: Profile,
    cleared: Collection[str] = (),
) -> SubmissionResult:
    """The result of a hand-in that was not taken in: nothing is run; every check of the
    hand-in fails with the reason, and the host's own checks are not run for it."""
    reason = refusal(intake)
    if reason is None:
        raise ValueError(f"{intake.id} was taken in: it is graded, not refused")
    why = "manifest-invalid" if isinstance(intake.problem, ManifestError) else "intake-refused"
    result = start_result(report, intake, report_dir)
    for check_id, spec in rubric.checks.items():
        check = CheckResult(check_id, spec.title, "failed", 0.0, spec.points, reason)
        known = check_by_id(check_id)
        if known is not None and known.stage == "env":  # the host's own: nothing of the hand-in
            check.status, check.message = "skipped", "skipped: the hand-in was not taken in"
        else:
            check.failed_for(Reason(f"{check_id}/{why}"))
        result.checks[check_id] = check
    review(result, profile.targets, rubric.integrity_penalty, cleared)
    return result

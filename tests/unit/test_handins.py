"""A batch taken in and split the same way whoever grades it: hand-ins not taken in scored 0 with
the reason and nothing run, stored results taken under their keys, the rest graded."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from grader.domain.dataset import Dataset
from grader.domain.handins import Intake, refusal, refused_result, start_result, take_in_all
from grader.domain.results import CheckResult, GradingReport, SubmissionResult
from grader.domain.rubric import load_rubric
from grader.domain.submission import discover
from grader.reports.reuse import hidden_key, partition
from grader.reports.store import store, submission_key

RUBRIC = load_rubric()
PROFILE = RUBRIC.profile("offline")


def _hand_in(batch: Path, name: str, manifest: str | None = None) -> Path:
    folder = batch / name
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "Dockerfile").write_text("FROM x\n")
    if manifest is not None:
        (folder / "submission.toml").write_text(manifest)
    return folder


def _escaping_zip(path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("evil/train/Dockerfile", "FROM x\n")
        archive.writestr("../outside.txt", "boom")
    path.write_bytes(buffer.getvalue())


def _take_in(tmp_path: Path, batch: Path) -> dict[str, Intake]:
    taken = take_in_all(discover([batch]), tmp_path / "r" / "intake", tmp_path / "run")
    return {intake.id: intake for intake in taken}


def _report() -> GradingReport:
    return GradingReport("run", "offline", "rubric.toml", "0")


def test_a_refused_archive_scores_zero_with_the_reason_and_runs_nothing(tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    _escaping_zip(batch / "evil.zip")
    intakes = _take_in(tmp_path, batch)
    evil = intakes["evil"]
    report = _report()
    result = refused_result(report, evil, tmp_path / "r", RUBRIC, PROFILE)
    assert report.submissions == {"evil": result}
    assert result.score == 0 and result.max_score == 100
    assert result.path == str(batch / "evil.zip")
    assert result.artifacts == str(tmp_path / "r" / "artifacts" / "evil")
    expected = (
        "evil.zip: refused, nothing was unpacked: entry '../outside.txt' leaves the submission "
        "folder; hand in an archive of regular files inside one folder"
    )
    statuses = {check_id: (c.status, c.message) for check_id, c in result.checks.items()}
    host = {"env.alpine_run", "env.alpine_interactive"}
    assert set(statuses) == set(RUBRIC.checks)
    for check_id, (status, message) in statuses.items():
        if check_id in host:  # the grading host's own step: not the hand-in's to fail
            assert (status, message) == ("skipped", "skipped: the hand-in was not taken in")
        else:
            assert (status, message) == ("failed", expected), check_id
            assert result.checks[check_id].reason == f"{check_id}/intake-refused"
    assert all(c.duration_s == 0 and c.log_excerpt == "" for c in result.checks.values())
    assert not (tmp_path / "outside.txt").exists()


def test_an_invalid_manifest_says_to_fix_it(tmp_path):
    batch = tmp_path / "batch"
    _hand_in(batch, "carol", "[student\n")
    (carol,) = _take_in(tmp_path, batch).values()
    assert carol.submission is None
    reason = refusal(carol)
    assert reason is not None
    assert reason.startswith(f"{batch / 'carol' / 'submission.toml'}: ")
    assert reason.endswith("; fix submission.toml and hand in again")
    assert str(tmp_path / "run") not in reason  # the private copy is the run's, not the student's
    result = refused_result(_report(), carol, tmp_path / "r", RUBRIC, PROFILE)
    assert result.checks["serve.ping"].reason == "serve.ping/manifest-invalid"
    assert result.checks["serve.ping"].message == reason


def test_a_folder_over_the_limits_names_what_to_leave_out_and_nothing_more(tmp_path):
    from grader.domain.intake import IntakeRefused

    intake = Intake("big", tmp_path, None, IntakeRefused("big/: refused, not copied: too much"))
    assert refusal(intake) == "big/: refused, not copied: too much"


def test_a_hand_in_taken_in_is_graded_not_refused(tmp_path):
    _hand_in(tmp_path / "batch", "alice")
    (alice,) = _take_in(tmp_path, tmp_path / "batch").values()
    assert refusal(alice) is None
    with pytest.raises(ValueError, match="alice was taken in"):
        refused_result(_report(), alice, tmp_path / "r", RUBRIC, PROFILE)


def test_a_refused_hand_in_keeps_what_intake_noticed(tmp_path):
    for batch in ("one", "two"):
        (tmp_path / batch).mkdir()
        _escaping_zip(tmp_path / batch / "evil.zip")
    taken = take_in_all(
        [tmp_path / "one" / "evil.zip", tmp_path / "two" / "evil.zip"],
        tmp_path / "r" / "intake",
        tmp_path / "run",
    )
    assert [intake.id for intake in taken] == ["evil", "evil (evil.zip)"]
    report = _report()
    first, second = (refused_result(report, i, tmp_path / "r", RUBRIC, PROFILE) for i in taken)
    assert list(report.submissions) == ["evil", "evil (evil.zip)"]
    assert second.artifacts == str(tmp_path / "r" / "artifacts" / "evil-evil-zip")
    assert second.notes[0].startswith("graded as 'evil (evil.zip)': 'evil' and the earlier")
    for result in (first, second):
        assert [flag.id for flag in result.integrity_flags] == ["student-id"]
        assert result.flags[0].startswith("student id 'evil' is claimed by 2 submissions")
        assert result.score == 0


def test_a_taken_in_hand_in_starts_with_its_manifests_name_and_warnings(tmp_path):
    alice = _hand_in(tmp_path / "batch", "alice", '[student]\nname = "Alice A."\n')
    (intake,) = _take_in(tmp_path, tmp_path / "batch").values()
    result = start_result(_report(), intake, tmp_path / "r")
    assert (result.path, result.student_name, result.checks) == (str(alice), "Alice A.", {})
    assert result.notes == list(intake.submission.warnings)


def _dataset(tmp_path: Path) -> Dataset:
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "dataset.json").write_text('{"source": "test"}')
    return Dataset(root, "test", {"train": 1})


def test_a_batch_splits_into_refused_stored_and_to_grade(tmp_path):
    batch = tmp_path / "batch"
    _hand_in(batch, "alice")
    _hand_in(batch, "bob")
    _escaping_zip(batch / "evil.zip")
    intakes = _take_in(tmp_path, batch)
    dataset, report_dir = _dataset(tmp_path), tmp_path / "r"
    key = submission_key(intakes["alice"].path, RUBRIC, PROFILE, dataset)
    stored = SubmissionResult("alice", "a", "b")
    spec = RUBRIC.checks["train.build"]
    stored.checks["train.build"] = CheckResult("train.build", "old", "passed", 1, 1)
    store(report_dir, stored, key)

    split = partition(intakes.values(), report_dir, RUBRIC, PROFILE, dataset,
                      hidden=None, force=False, cleared={})  # fmt: skip
    assert [i.id for i in split.refused] == ["evil"]
    assert [i.id for i in split.to_grade] == ["bob"]
    assert list(split.stored) == ["alice"]
    assert set(split.keys) == {"alice", "bob"} and split.keys["alice"] == key
    # re-scored under this run's rubric: its title and points
    taken = split.stored["alice"].checks["train.build"]
    assert (taken.title, taken.points, taken.max_points) == (spec.title, spec.points, spec.points)
    lines = split.lines()
    assert lines[0].startswith("evil: not taken in, scored 0 (evil.zip: refused")
    assert lines[1] == (
        "1 unchanged submission(s) taken from stored results (--force grades them again)"
    )

    forced = partition(intakes.values(), report_dir, RUBRIC, PROFILE, dataset,
                       hidden=None, force=True, cleared={})  # fmt: skip
    assert [i.id for i in forced.to_grade] == ["alice", "bob"] and not forced.stored
    other_digits = partition(intakes.values(), report_dir, RUBRIC, PROFILE, dataset,
                             hidden="seed 7", force=False, cleared={})  # fmt: skip
    assert not other_digits.stored

    (intakes["alice"].path / "train" / "Dockerfile").write_text("FROM y\n")
    changed = partition(intakes.values(), report_dir, RUBRIC, PROFILE, dataset,
                        hidden=None, force=False, cleared={})  # fmt: skip
    assert not changed.stored


def test_the_hidden_key_names_a_chosen_seed_and_the_courses_digits(tmp_path):
    assert hidden_key(None, None) is None
    assert hidden_key(7, None) == "seed 7"
    assert hidden_key(0, None) == "seed 0"


def test_a_split_without_refusals_or_stored_results_says_nothing():
    from grader.reports.reuse import Partition

    assert Partition().lines() == []

"""Verdicts from measurements and targets, with values worked out by hand: SPEC.md §4 (a check
passes when its figure reaches the target) and §5 (a reported accuracy far above the measured one
is flagged; a flag a TA has not cleared withholds the points of the checks it concerns when the
penalty is on)."""

from __future__ import annotations

import pytest

from grader.domain.results import CheckResult, Flag, SubmissionResult
from grader.domain.rubric import Targets
from grader.domain.verdicts import (
    clear,
    gpu_use_verdict,
    heldout_accuracy_failure,
    heldout_accuracy_problem,
    integrity_flag,
    integrity_flags,
    not_torchserve_flag,
    reported_accuracy_failure,
    reported_accuracy_problem,
    review,
    served_model_flag,
    unverified_notes,
)

# Binary fractions, so that differences are exact.
TARGETS = Targets(reported_accuracy=0.875, heldout_accuracy=0.75, integrity_gap=0.25)


def test_a_reported_accuracy_at_the_target_passes_and_one_below_says_both_figures():
    assert reported_accuracy_problem(0.875, "metrics.json", 0.875) is None
    assert reported_accuracy_problem(0.9, "metrics.json", 0.875) is None
    problem = reported_accuracy_problem(0.80125, "training log line 7", 0.875)
    assert problem is not None
    assert "0.8012" in problem or "0.8013" in problem  # four decimals
    assert "0.8750" in problem and "training log line 7" in problem


def test_a_heldout_accuracy_at_the_target_passes():
    assert heldout_accuracy_problem({"heldout_accuracy": 0.75, "heldout_total": 800}, 0.75) is None


def test_a_heldout_accuracy_below_the_target_names_count_figures_and_failed_requests():
    measured = {
        "heldout_accuracy": 0.5,
        "heldout_total": 800,
        "heldout_errors": 3,
        "heldout_error_example": "HTTP 500 on digit 17",
    }
    problem = heldout_accuracy_problem(measured, 0.75)
    assert problem is not None
    assert "800" in problem and "0.5000" in problem and "0.7500" in problem
    assert "3 requests failed" in problem and "HTTP 500 on digit 17" in problem


@pytest.mark.parametrize(
    "extra",
    [{}, {"heldout_errors": 3}, {"heldout_error_example": "HTTP 500"}, {"heldout_errors": 0}],
)
def test_failed_requests_are_mentioned_only_with_a_count_and_an_example(extra):
    problem = heldout_accuracy_problem({"heldout_accuracy": 0.5, "heldout_total": 800, **extra}, 1)
    assert problem is not None and "failed" not in problem


def test_a_gap_of_exactly_the_allowed_size_raises_no_flag():
    measured = {"reported_accuracy": 0.75, "heldout_accuracy": 0.5}
    assert integrity_flag(measured, TARGETS) is None


def test_a_gap_above_the_allowed_size_is_flagged_with_both_figures():
    flag = integrity_flag({"reported_accuracy": 0.875, "heldout_accuracy": 0.5}, TARGETS)
    assert flag is not None
    assert "0.8750" in flag and "0.5000" in flag and "0.25" in flag


@pytest.mark.parametrize(
    "measured",
    [
        {"heldout_accuracy": 0.0},
        {"reported_accuracy": 1.0},
        {"reported_accuracy": 1, "heldout_accuracy": 0.0},  # not a measured fraction
        {"reported_accuracy": 1.0, "heldout_accuracy": None},
    ],
)
def test_no_integrity_flag_without_both_figures(measured):
    assert integrity_flag(measured, TARGETS) is None


def test_a_cpu_stand_in_makes_a_note_naming_the_images_not_a_flag():
    verdict = gpu_use_verdict(False, "GPU 1", ["base/a:1", "base/b:2"])
    assert verdict is not None
    kind, text = verdict
    assert kind == "note"
    assert text.startswith("infrastructure")
    assert "GPU 1" in text and "base/a:1, base/b:2" in text


def test_a_probe_that_did_not_run_is_a_note_naming_the_device():
    verdict = gpu_use_verdict(None, "GPU 1", ["base/a:1"])
    assert verdict is not None
    assert verdict[0] == "note" and "GPU 1" in verdict[1]


def test_an_image_without_cuda_is_flagged_naming_the_device():
    verdict = gpu_use_verdict(False, "all GPUs", [])
    assert verdict is not None
    assert verdict[0] == "flag" and "all GPUs" in verdict[1]


WEIGHTS = {
    "served_model_sha256": "a" * 64,
    "expected_model_sha256": "b" * 64,
    "served_model_file": "mnist_cnn.pt",
    "served_model_archive": "mnist.mar",
}


def test_foreign_weights_name_file_archive_and_both_short_digests():
    flag = served_model_flag(WEIGHTS)
    assert flag is not None
    assert "mnist_cnn.pt" in flag and "mnist.mar" in flag
    # 12 hexadecimal digits of each digest, no more
    assert "a" * 12 + "..." in flag and "a" * 13 not in flag
    assert "b" * 12 + "..." in flag and "b" * 13 not in flag
    assert "training produced" in flag and "committed" not in flag


def test_foreign_weights_against_a_committed_model_say_so():
    flag = served_model_flag({**WEIGHTS, "expected_model_origin": "committed"})
    assert flag is not None and "committed" in flag


@pytest.mark.parametrize(
    "change",
    [
        {"expected_model_sha256": "a" * 64},  # the same weights
        {"served_model_sha256": None},
        {"expected_model_sha256": None},
    ],
)
def test_no_weights_flag_when_they_match_or_a_digest_is_missing(change):
    assert served_model_flag({**WEIGHTS, **change}) is None


def test_a_server_that_is_not_torchserve_lists_at_most_five_processes_shortened():
    processes = [f"proc{i} " + "x" * 200 for i in range(7)]
    flag = not_torchserve_flag({"server_is_torchserve": False, "server_processes": processes})
    assert flag is not None
    assert "proc0 " + "x" * 114 + ";" in flag  # 120 characters each, joined by "; "
    assert "proc4" in flag and "proc5" not in flag
    assert "x" * 115 not in flag


def test_a_server_with_no_processes_listed_says_none():
    flag = not_torchserve_flag({"server_is_torchserve": False})
    assert flag is not None and "(processes: none)" in flag


@pytest.mark.parametrize("value", [True, None])
def test_a_torchserve_server_or_an_unknown_one_is_not_flagged(value):
    measured = {"server_is_torchserve": value} if value is not None else {}
    assert not_torchserve_flag(measured) is None


def test_each_flag_concerns_the_checks_its_measurement_puts_in_doubt():
    measured = {
        "reported_accuracy": 0.99,
        "heldout_accuracy": 0.5,
        "server_is_torchserve": False,
        **WEIGHTS,
    }
    flags = {flag.id: flag.checks for flag in integrity_flags(measured, TARGETS)}
    answers = ["serve.sample_prediction", "serve.heldout_accuracy"]
    assert flags == {
        "reported-accuracy": ["train.reported_accuracy"],
        "not-torchserve": ["serve.ping", "serve.model_ready", *answers],
        "served-model": answers,
    }


def test_a_reported_accuracy_with_every_request_failed_is_unverified():
    notes = unverified_notes(
        {
            "reported_accuracy": 0.9875,
            "heldout_accuracy": 0.0,
            "heldout_total": 4,
            "heldout_errors": 4,
        }
    )
    assert len(notes) == 1 and notes[0].startswith("unverified: ") and "0.9875" in notes[0]


def test_a_reported_accuracy_measured_on_some_digits_is_verified():
    measured = {"reported_accuracy": 0.9875, "heldout_accuracy": 0.5, "heldout_total": 4}
    assert unverified_notes({**measured, "heldout_errors": 3}) == []
    assert unverified_notes(measured) == []


def test_no_note_without_a_reported_accuracy():
    assert unverified_notes({"heldout_total": 4}) == []


def test_weights_that_could_not_be_compared_are_unverified_unless_not_torchserve():
    problem = {"served_model_problem": "the archive mnist.mar could not be read"}
    notes = unverified_notes(problem)
    assert len(notes) == 1 and notes[0].startswith("unverified: ")
    assert notes[0].endswith("the archive mnist.mar could not be read")
    assert unverified_notes({**problem, "server_is_torchserve": True}) == notes
    assert unverified_notes({**problem, "server_is_torchserve": False}) == []


def _result(measurements: dict) -> SubmissionResult:
    result = SubmissionResult("alice", "/subs/alice", "/artifacts/alice")
    for check_id, status in (
        ("train.reported_accuracy", "passed"),
        ("serve.ping", "passed"),
        ("serve.sample_prediction", "passed"),
        ("serve.heldout_accuracy", "failed"),
    ):
        result.checks[check_id] = CheckResult(check_id, check_id, status, 0.0, 10.0)
    result.measurements.update(measurements)
    return result


FOREIGN = {**WEIGHTS, "heldout_accuracy": 0.5, "heldout_total": 4}


def test_without_the_penalty_every_pass_earns_its_points_despite_flags():
    result = _result(FOREIGN)
    review(result, TARGETS, penalty=False)
    assert [f.id for f in result.integrity_flags] == ["served-model"]
    points = {i: (c.points, c.withheld_by, c.message) for i, c in result.checks.items()}
    assert points == {
        "train.reported_accuracy": (10.0, [], ""),
        "serve.ping": (10.0, [], ""),
        "serve.sample_prediction": (10.0, [], ""),
        "serve.heldout_accuracy": (0.0, [], ""),
    }


def test_the_penalty_withholds_only_passes_the_flag_concerns_and_says_how_to_clear():
    result = _result(FOREIGN)
    result.checks["serve.heldout_accuracy"].message = "accuracy below the target"
    review(result, TARGETS, penalty=True)
    sample = result.checks["serve.sample_prediction"]
    assert (sample.points, sample.withheld_by) == (0.0, ["served-model"])
    assert sample.message.endswith("(`grader flags clear alice:served-model`)")
    assert "served-model" in sample.message
    failed = result.checks["serve.heldout_accuracy"]  # failed: nothing to withhold
    assert (failed.points, failed.withheld_by) == (0.0, [])
    assert failed.message == "accuracy below the target"
    assert result.checks["serve.ping"].points == 10.0
    assert result.score == 20.0


def test_a_cleared_flag_withholds_nothing():
    result = _result(FOREIGN)
    review(result, TARGETS, penalty=True, cleared={"served-model"})
    assert result.integrity_flags[0].cleared is True
    assert result.checks["serve.sample_prediction"].points == 10.0
    assert result.score == 30.0


def test_review_keeps_raised_flags_replaces_derived_ones_and_is_idempotent():
    result = _result(FOREIGN)
    result.integrity_flags = [
        Flag("cpu-training", "trained on the CPU", ["train.run"]),
        Flag("served-model", "stale text from an earlier review", ["serve.ping"]),
    ]
    result.notes = ["unverified: stale", "kept note"]
    review(result, TARGETS, penalty=False)
    first = [(f.id, f.message, f.checks, f.cleared) for f in result.integrity_flags]
    assert [f[0] for f in first] == ["cpu-training", "served-model"]
    assert first[0] == ("cpu-training", "trained on the CPU", ["train.run"], False)
    assert first[1][1] != "stale text from an earlier review"
    assert result.notes == ["kept note"]
    review(result, TARGETS, penalty=False)
    assert [(f.id, f.message, f.checks, f.cleared) for f in result.integrity_flags] == first
    assert result.notes == ["kept note"]


def test_review_marks_only_the_cleared_flags():
    result = _result({**FOREIGN, "server_is_torchserve": False})
    review(result, TARGETS, penalty=True, cleared={"not-torchserve"})
    assert {f.id: f.cleared for f in result.integrity_flags} == {
        "not-torchserve": True,
        "served-model": False,
    }
    # served-model still stands over the sample prediction; ping only had not-torchserve
    assert result.checks["serve.ping"].points == 10.0
    assert result.checks["serve.sample_prediction"].withheld_by == ["served-model"]


def test_two_flags_withhold_together_and_the_message_names_both():
    result = _result({**FOREIGN, "server_is_torchserve": False})
    review(result, TARGETS, penalty=True)
    sample = result.checks["serve.sample_prediction"]
    assert sample.withheld_by == ["not-torchserve", "served-model"]
    assert "not-torchserve, served-model" in sample.message
    assert "`grader flags clear alice:not-torchserve`" in sample.message


def test_clearing_one_of_two_flags_keeps_the_points_withheld_until_both_are():
    result = _result({**FOREIGN, "server_is_torchserve": False})
    review(result, TARGETS, penalty=True)
    clear(result, "served-model")
    sample = result.checks["serve.sample_prediction"]
    assert (sample.points, sample.withheld_by) == (0.0, ["not-torchserve"])
    assert sample.message != ""
    assert {f.id: f.cleared for f in result.integrity_flags} == {
        "not-torchserve": False,
        "served-model": True,
    }
    clear(result, "not-torchserve")
    assert (sample.points, sample.withheld_by, sample.message) == (10.0, [], "")
    ping = result.checks["serve.ping"]
    assert (ping.points, ping.withheld_by, ping.message) == (10.0, [], "")


def test_a_reported_accuracy_below_the_target_carries_its_reason_and_figures():
    failure = reported_accuracy_failure(0.8, "metrics.json", 0.875)
    assert failure is not None
    assert failure.reason.code == "train.reported_accuracy/below-target"
    assert dict(failure.reason.facts) == {"accuracy": 0.8, "target": 0.875}
    assert reported_accuracy_failure(0.875, "metrics.json", 0.875) is None


def test_a_heldout_accuracy_below_the_target_carries_its_reason_and_figures():
    failure = heldout_accuracy_failure({"heldout_accuracy": 0.5, "heldout_total": 800}, 0.75)
    assert failure is not None
    assert failure.reason.code == "serve.heldout_accuracy/below-target"
    assert dict(failure.reason.facts) == {"accuracy": 0.5, "target": 0.75}


def test_a_heldout_accuracy_without_a_count_of_digits_verifies_nothing():
    notes = unverified_notes({"reported_accuracy": 0.9, "heldout_accuracy": 0.5})
    assert len(notes) == 1 and "0.9000" in notes[0]


def test_one_digit_answered_is_a_measurement():
    measured = {"reported_accuracy": 0.9, "heldout_accuracy": 1.0, "heldout_total": 1}
    assert unverified_notes(measured) == []

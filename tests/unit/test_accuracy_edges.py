"""Edges of reading a reported accuracy: the bounds of metrics.json, how nesting is counted, and
which number of a log line is taken. Expected values are worked out by hand from SPEC.md §3/§4
(a fraction in [0, 1]) and the documented limits (1,000,000 bytes, 32 levels)."""

from __future__ import annotations

import json

import pytest

from grader.domain.accuracy import ReportedAccuracy, from_log, from_metrics


def _metrics(tmp_path, text: str) -> ReportedAccuracy | str | None:
    path = tmp_path / "metrics.json"
    path.write_text(text, encoding="utf-8")
    return from_metrics(path)


def _example_in(problem: str) -> dict:
    """The metrics.json a problem message shows as the fix (its last {...})."""
    return json.loads(problem[problem.rindex("{") :])


def test_a_file_of_exactly_the_size_limit_is_read(tmp_path):
    head = '{"test_accuracy": 0.97}'
    text = head[:-1] + " " * (1_000_000 - len(head)) + "}"
    assert len(text.encode()) == 1_000_000
    assert _metrics(tmp_path, text) == ReportedAccuracy(
        0.97, "metrics.json", '"test_accuracy": 0.97'
    )


def test_a_file_one_byte_over_the_limit_is_refused_with_a_valid_example(tmp_path):
    head = '{"test_accuracy": 0.97}'
    problem = _metrics(tmp_path, head[:-1] + " " * (1_000_001 - len(head)) + "}")
    assert isinstance(problem, str)
    assert "1,000,001 bytes" in problem
    example = _example_in(problem)
    assert set(example) == {"test_accuracy"} and 0 <= example["test_accuracy"] <= 1


def _nested(levels: int) -> str:
    """A JSON value nesting `levels` arrays."""
    return "[" * levels + "0" + "]" * levels


def test_nesting_of_exactly_32_levels_is_read(tmp_path):
    # the object is level 1, the arrays 2..32
    text = '{"test_accuracy": 0.5, "deep": ' + _nested(31) + "}"
    assert _metrics(tmp_path, text) == ReportedAccuracy(0.5, "metrics.json", '"test_accuracy": 0.5')


def test_nesting_of_33_levels_is_refused_with_a_flat_example(tmp_path):
    problem = _metrics(tmp_path, '{"test_accuracy": 0.5, "deep": ' + _nested(32) + "}")
    assert isinstance(problem, str) and "32 levels" in problem
    example = _example_in(problem)
    assert set(example) == {"test_accuracy"} and 0 <= example["test_accuracy"] <= 1


def test_siblings_are_counted_from_their_own_level(tmp_path):
    # levels: object 1, "a" 2, "b" 3 (closed), "c" opens 31 arrays under level 2 -> 33
    deep = '{"test_accuracy": 0.5, "a": {"b": [0], "c": ' + _nested(31) + "}}"
    assert isinstance(_metrics(tmp_path, deep), str)
    # closed siblings do not add up: the deepest of these is 32
    flat = '{"test_accuracy": 0.5, "a": [[0]], "b": [[0]], "c": ' + _nested(31) + "}"
    assert _metrics(tmp_path, flat) == ReportedAccuracy(0.5, "metrics.json", '"test_accuracy": 0.5')


def test_brackets_after_an_escaped_backslash_are_counted(tmp_path):
    # the string "a\\b" ends at its closing quote, so the arrays after it count: 33 levels
    text = '{"note": "a\\\\b", "test_accuracy": 0.5, "deep": ' + _nested(32) + "}"
    assert json.loads(text)["note"] == "a\\b"
    assert isinstance(_metrics(tmp_path, text), str)


def test_brackets_after_an_escaped_quote_stay_inside_the_string(tmp_path):
    text = '{"test_accuracy": 0.5, "note": "\\"' + "[" * 40 + '"}'
    assert json.loads(text)["note"] == '"' + "[" * 40
    assert _metrics(tmp_path, text) == ReportedAccuracy(0.5, "metrics.json", '"test_accuracy": 0.5')


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0.0), ("0.0", 0.0), ("1", 1.0), ("1.0", 1.0)]
)
def test_the_ends_of_the_fraction_range_are_accepted(tmp_path, value, expected):
    reported = _metrics(tmp_path, '{"test_accuracy": ' + value + "}")
    assert isinstance(reported, ReportedAccuracy) and reported.value == expected


@pytest.mark.parametrize("value", ["1.5", "-0.1", "2"])
def test_values_outside_the_fraction_range_are_refused(tmp_path, value):
    problem = _metrics(tmp_path, '{"test_accuracy": ' + value + "}")
    assert isinstance(problem, str) and "fraction" in problem


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("Test accuracy 10/10", 1.0),  # the count path, all correct
        ("Accuracy: 1/1", 1.0),
        ("Test accuracy: 0.8%", 0.008),  # a percentage below 1 %, not the fraction 0.8
        ("Test accuracy: 100% (loss 0.02)", 1.0),  # the percentage, not the later fraction
        ("val_acc 1.0", 1.0),  # a decimal fraction at the top of the range
        ("Test accuracy: 2", 0.02),  # a bare number above 1 reads as a percentage
        ("Test accuracy: 100", 1.0),
        ("accuracy 1.5", 0.015),
        # numbers before the keyword are not the accuracy
        ("Train Epoch: 1 [1280/3000 (43%)]\tLoss: 0.5 Accuracy: 0.91", 0.91),
    ],
)
def test_which_number_of_a_line_is_the_accuracy(line, value):
    reported = from_log(line)
    assert reported is not None and reported.value == pytest.approx(value)


@pytest.mark.parametrize(
    "line",
    [
        "accuracy: 0/0",  # no division by zero
        "Test accuracy: 1",  # 1 % or 100 %: cannot be told
        "Test accuracy: 100.5%",
        "Test accuracy: 100.5",
    ],
)
def test_lines_without_a_readable_fraction(line):
    assert from_log(line) is None


def test_a_count_above_its_total_is_not_a_fraction_above_1():
    reported = from_log("accuracy 11/10")
    assert reported is None or 0 <= reported.value <= 1


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (
            "  Test set: Average loss: 0.1, Accuracy: 970/1000 (97%)  ",
            "Test set: Average loss: 0.1, Accuracy: 970/1000 (97%)",
        ),
        ("\tTest accuracy: 98.7%\t", "Test accuracy: 98.7%"),
        (" val_acc 0.95 ", "val_acc 0.95"),
        (" test_acc: 97.5 ", "test_acc: 97.5"),
    ],
)
def test_the_report_quotes_the_line_read_without_surrounding_blanks(line, text):
    reported = from_log(f"starting\n{line}\n")
    assert reported is not None
    assert (reported.source, reported.text) == ("training log line 2", text)


def test_a_long_line_is_quoted_up_to_200_characters():
    line = "Test accuracy: 0.97 " + "x" * 300
    reported = from_log(line)
    assert reported is not None and reported.text == line[:200]


def test_a_line_that_names_neither_training_nor_evaluation_counts_as_evaluation():
    # the last evaluation accuracy wins over a later training one
    reported = from_log("epoch 1 accuracy 0.90\nTrain accuracy 0.99\n")
    assert reported is not None and reported.value == pytest.approx(0.90)


def test_a_line_with_both_training_and_validation_figures_is_an_evaluation():
    reported = from_log("epoch 1 train_loss 0.2 val_acc 0.93\nTrain accuracy 0.99\n")
    assert reported is not None and reported.value == pytest.approx(0.93)

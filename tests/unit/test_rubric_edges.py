"""Edges of the rubric (SPEC.md §4): check_seconds at exactly the longest stage, profiles named
and described, what an extending profile may override, and the effective rubric that
`grader rubric show` prints (its --json form is read by scripts). Values are taken from the
rubric file under test or worked out by hand, never from the module's constants."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.domain.config import Invalid
from grader.domain.errors import RubricError
from grader.domain.rubric import (
    DEFAULT_RUBRIC,
    Limits,
    effective_rubric,
    format_rubric,
    load_rubric,
)

STAGES = {"build_seconds": 600.0, "train_seconds": 900.0, "server_ready_seconds": 120.0}
OTHERS = {"cpus": 1.0, "memory_mb": 1024, "pids": 256, "predict_concurrency": 2}


def test_check_seconds_may_equal_the_longest_stage_but_not_be_shorter():
    assert Limits(**STAGES, **OTHERS, check_seconds=900.0).check_seconds == 900.0
    with pytest.raises(Invalid):
        Limits(**STAGES, **OTHERS, check_seconds=899.0)


def _rubric(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "rubric.toml"
    path.write_text(DEFAULT_RUBRIC.read_text() + extra)
    return path


BARE = """
[profiles.bare]
dataset = "offline"
[profiles.bare.targets]
reported_accuracy = 0.5
heldout_accuracy = 0.5
integrity_gap = 0.5
[profiles.bare.limits]
build_seconds = 60
train_seconds = 60
cpus = 1.0
memory_mb = 512
pids = 64
server_ready_seconds = 60
predict_concurrency = 1
"""


def test_a_profile_is_named_by_its_table_and_described_by_its_name_when_not_described(tmp_path):
    rubric = load_rubric(_rubric(tmp_path, BARE))
    bare = rubric.profile("bare")
    assert (bare.name, bare.description) == ("bare", "bare")
    offline = rubric.profile("offline")
    assert offline.name == "offline" and offline.description.startswith("Offline, CPU")


def test_an_unknown_profile_is_named_with_the_rubric_file(tmp_path):
    path = _rubric(tmp_path, "")
    with pytest.raises(RubricError) as error:
        load_rubric(path).profile("nope")
    assert str(error.value).startswith(f"{path}: no profile 'nope'")


def test_an_extending_profile_that_replaces_a_table_by_a_value_is_a_rubric_error(tmp_path):
    path = _rubric(tmp_path, '\n[profiles.quick]\nextends = "offline"\nlimits = 5\n')
    with pytest.raises(RubricError, match=r"profiles\.quick\.limits"):
        load_rubric(path)


def test_the_effective_rubric_lists_points_targets_and_limits_as_the_file_gives_them():
    rubric = load_rubric()
    data = effective_rubric(rubric, rubric.profile("offline"))
    assert data["rubric"] == str(DEFAULT_RUBRIC)
    assert (data["profile"], data["dataset"], data["build_network"]) == (
        "offline",
        "offline",
        "isolated",
    )
    assert data["description"].startswith("Offline, CPU")
    assert data["max_score"] == 100  # SPEC §4: the default rubric is worth 100 points
    assert data["integrity_penalty"] is False
    assert data["checks"]["serve.heldout_accuracy"]["points"] == 20
    assert data["checks"]["train.dockerfile"]["points"] == 5
    assert data["checks"]["serve.ping"]["title"]
    assert data["targets"] == {
        "reported_accuracy": 0.90,
        "heldout_accuracy": 0.90,
        "integrity_gap": 0.10,
    }
    assert data["limits"]["train_seconds"] == 900 and data["limits"]["heldout_digits"] == 800


def test_the_printed_rubric_shows_the_file_profile_penalty_checks_and_values(tmp_path):
    rubric = load_rubric()
    text = format_rubric(rubric, rubric.profile("offline"))
    lines = text.splitlines()
    assert lines[0].split() == ["rubric", str(DEFAULT_RUBRIC)]
    assert lines[1].startswith("profile") and "offline" in lines[1] and "isolated" in lines[1]
    assert "(100 points)" in text
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ")}
    assert rows["serve.heldout_accuracy"][0] == "20"
    assert rows["reported_accuracy"] == ["0.9"] and rows["integrity_gap"] == ["0.1"]
    assert rows["heldout_digits"] == ["800"]
    assert "" in lines and "targets" in lines and "limits" in lines
    penalty_path = (
        _rubric(tmp_path, "")
        .read_text()
        .replace("integrity_penalty = false", "integrity_penalty = true", 1)
    )
    (tmp_path / "penalty.toml").write_text(penalty_path)
    strict = load_rubric(tmp_path / "penalty.toml")
    strict_text = format_rubric(strict, strict.profile("offline"))
    kept = next(line for line in lines if line.startswith("integrity flags"))
    withheld = next(line for line in strict_text.splitlines() if line.startswith("integrity flags"))
    assert kept != withheld and "withhold" in withheld and "withhold" not in kept

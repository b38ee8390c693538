from __future__ import annotations

import pytest

from grader.errors import RubricError
from grader.rubric import DEFAULT_RUBRIC, load_rubric


def test_default_rubric():
    rubric = load_rubric()
    assert rubric.max_score == 100
    offline = rubric.profile("offline")
    assert offline.dataset == "offline"
    assert 0 < offline.targets.reported_accuracy < 1
    assert rubric.profile("full").targets.reported_accuracy >= 0.98


def test_unknown_profile():
    with pytest.raises(RubricError, match="no profile 'gpu'; it defines offline, full"):
        load_rubric().profile("gpu")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('[checks."train.build"]', '[checks."train.bild"]', "checks.train.bild: unknown check id"),
        (
            'points = 10\ntitle = "The training image',
            'points = -1\ntitle = "The training image',
            "checks.train.build.points: must be at least 0, got -1",
        ),
        ("reported_accuracy = 0.90", "", "profiles.offline.targets.reported_accuracy: missing"),
        (
            "reported_accuracy = 0.90",
            "reported_accuracy = 90",
            "profiles.offline.targets.reported_accuracy: must be at most 1",
        ),
        ("reported_accuracy = 0.90", 'reported_accuracy = "high"', "must be a number, got 'high'"),
        ('dataset = "offline"', 'dataset = "imagenet"', "profiles.offline.dataset: must be one of"),
        ("pids = 1024", "pids = 1024\nswap = 1", "profiles.offline.limits.swap: unknown key"),
        (
            "[profiles.offline.limits]",
            "[profiles.offline.limitz]",
            "profiles.offline.limitz: unknown key",
        ),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path, old, new, message):
    text = DEFAULT_RUBRIC.read_text()
    assert old in text
    path = tmp_path / "rubric.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RubricError) as raised:
        load_rubric(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_unreadable_rubrics(tmp_path):
    with pytest.raises(RubricError, match="no such rubric file"):
        load_rubric(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[checks\n")
    with pytest.raises(RubricError, match="not valid TOML"):
        load_rubric(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("[checks]\n[profiles]\n")
    with pytest.raises(RubricError, match="profiles: at least one profile is needed"):
        load_rubric(empty)

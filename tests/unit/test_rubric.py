from __future__ import annotations

import pytest

from grader.domain.errors import RubricError
from grader.domain.rubric import DEFAULT_RUBRIC, load_rubric


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
        (
            '[checks."train.build"]',
            '[checks."train.bild"]',
            'checks."train.bild": unknown check id; known ones are env.alpine_run, ',
        ),
        (
            '[checks."train.build"]\npoints = 10',
            '[checks."train.build"]\npoints = -1',
            'checks."train.build".points: must be a number at least 0, got -1',
        ),
        (
            '[checks."train.build"]\npoints = 10',
            '[checks."train.build"]\npoints = "ten"',
            "checks.\"train.build\".points: must be a number at least 0, got 'ten'",
        ),
        (
            "reported_accuracy = 0.90",
            "",
            "profiles.offline.targets.reported_accuracy: missing; set it to a number from 0 to 1",
        ),
        (
            "reported_accuracy = 0.90",
            "reported_accuracy = 90",
            "profiles.offline.targets.reported_accuracy: must be a number from 0 to 1, got 90",
        ),
        (
            "reported_accuracy = 0.90",
            'reported_accuracy = "high"',
            "profiles.offline.targets.reported_accuracy: must be a number from 0 to 1, got 'high'",
        ),
        (
            'dataset = "offline"',
            'dataset = "imagenet"',
            "profiles.offline.dataset: must be one of \"full\", \"offline\", got 'imagenet'",
        ),
        ("pids = 1024", "pids = 1.5", "profiles.offline.limits.pids: must be a whole number at "
         "least 16, got 1.5"),
        ("pids = 1024", "pids = 1024\nswap = 1", "profiles.offline.limits.swap: unknown key; "
         "allowed here: build_context_mb, build_seconds, check_seconds, cpus, heldout_digits, "
         "memory_mb, model_mb, output_mb, pids, predict_concurrency, predict_timeout_seconds, "
         "server_ready_seconds, submission_seconds, train_seconds, writable_mb"),
        ("pids = 1024", "", "profiles.offline.limits.pids: missing; set it to a whole number at "
         "least 16"),
        (
            "[profiles.offline.limits]",
            "[profiles.offline.limitz]",
            "profiles.offline.limitz: unknown key; allowed here: build_network, dataset, "
            "description, extends, limits, targets",
        ),
        ("integrity_penalty = false", "integrity_penalty = 0", "integrity_penalty: must be true "
         "(withhold the points of flagged checks) or false (keep them), got 0"),
        ("integrity_penalty = false", "integrity_penalty = false\npenalty = 1",
         "penalty: unknown key; allowed here: checks, integrity_penalty, profiles"),
    ],
)  # fmt: skip
def test_validation_errors_name_file_and_key(tmp_path, old, new, message):
    text = DEFAULT_RUBRIC.read_text()
    assert old in text
    path = tmp_path / "rubric.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RubricError) as raised:
        load_rubric(path)
    assert str(raised.value).startswith(f"{path}: {message}")
    assert "\n" not in str(raised.value)


def test_limits_left_out_take_their_defaults(tmp_path):
    text = DEFAULT_RUBRIC.read_text()
    path = tmp_path / "rubric.toml"
    path.write_text(
        text.replace("heldout_digits = 800\n", "", 1).replace("check_seconds = 1200\n", "")
    )
    limits = load_rubric(path).profile("offline").limits
    assert (limits.build_context_mb, limits.predict_timeout_seconds) == (500, 30)
    assert (limits.model_mb, limits.heldout_digits) == (500, 1000)
    assert limits.check_seconds == 900 + 300  # the longest stage's limit and five minutes
    assert load_rubric().profile("offline").build_network == "isolated"


def test_unreadable_rubrics(tmp_path):
    with pytest.raises(RubricError, match="no such rubric file"):
        load_rubric(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[checks\n")
    with pytest.raises(RubricError, match="not valid TOML"):
        load_rubric(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("[checks]\n[profiles]\n")
    with pytest.raises(RubricError) as raised:
        load_rubric(empty)
    assert str(raised.value) == (
        f"{empty}: profiles: at least one profile is needed, e.g. [profiles.offline]"
    )
    empty.write_text("[checks]\n")
    with pytest.raises(RubricError) as raised:
        load_rubric(empty)
    assert str(raised.value) == (
        f"{empty}: profiles: at least one profile is needed, e.g. [profiles.offline]"
    )


def write(tmp_path, extra):
    path = tmp_path / "rubric.toml"
    path.write_text(DEFAULT_RUBRIC.read_text() + extra)
    return path


def test_a_profile_extends_another_table_by_table(tmp_path):
    path = write(
        tmp_path,
        '[profiles.quick]\nextends = "offline"\ndescription = "Quick"\n'
        "[profiles.quick.limits]\ntrain_seconds = 120\n"
        '[profiles.quicker]\nextends = "quick"\n'
        "[profiles.quicker.targets]\nheldout_accuracy = 0.5\n",
    )
    rubric = load_rubric(path)
    offline, quick, quicker = (rubric.profile(n) for n in ("offline", "quick", "quicker"))
    assert quick.limits.train_seconds == 120
    assert quick.limits.build_seconds == offline.limits.build_seconds
    assert quick.targets == offline.targets and quick.dataset == "offline"
    assert quicker.description == "Quick" and quicker.limits.train_seconds == 120
    assert quicker.targets.heldout_accuracy == 0.5
    assert quicker.targets.reported_accuracy == offline.targets.reported_accuracy


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[profiles.q]\nextends = "gpu"\n',
         "profiles.q.extends: no profile 'gpu' to extend; defined: offline, full, q"),
        ('[profiles.a]\nextends = "b"\n[profiles.b]\nextends = "a"\n',
         "profiles.b.extends: profiles extend each other in a cycle (a -> b -> a)"),
        ('[profiles.a]\nextends = "a"\n',
         "profiles.a.extends: profiles extend each other in a cycle (a -> a)"),
        ('[profiles.q]\ndataset = "offline"\n[profiles.q.targets]\nreported_accuracy = 0.9\n'
         "heldout_accuracy = 0.9\n[profiles.q.limits]\nbuild_seconds = 1\ntrain_seconds = 1\n"
         "cpus = 1\nmemory_mb = 512\npids = 64\nserver_ready_seconds = 9\n"
         "predict_concurrency = 1\n",
         "profiles.q.targets.integrity_gap: missing; set it to a number from 0 to 1"),
    ],
)  # fmt: skip
def test_extension_errors(tmp_path, extra, message):
    path = write(tmp_path, extra)
    with pytest.raises(RubricError) as raised:
        load_rubric(path)
    assert str(raised.value) == f"{path}: {message}"

"""Score integrity without an engine: the per-run hidden sample, the served-model comparison,
flags, the integrity penalty, re-scoring and a TA's clearing."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import zipfile
from pathlib import Path

import pytest

from grader.cli.main import main
from grader.domain.dataset import (
    Digits,
    encode_idx_images,
    encode_idx_labels,
    hidden_sample,
    read_hidden_dir,
)
from grader.domain.errors import DatasetError, GraderError, RubricError
from grader.domain.results import CheckResult, GradingReport, SubmissionResult
from grader.domain.rubric import DEFAULT_RUBRIC, load_rubric
from grader.domain.verdicts import review
from grader.engine.integrity import (
    Unreadable,
    Weights,
    archive_name,
    is_torchserve,
    model_store,
    serialized_weights,
)
from grader.reports.store import clear_flag, load_cleared, rescore

SIDE = 28


def blob_digits(count: int) -> Digits:
    """Distinct synthetic digits: a bright 6x6 square at a different place in each."""
    pixels = bytearray()
    for index in range(count):
        image = bytearray(SIDE * SIDE)
        top, left = 6 + index % 12, 6 + (index // 12) % 12
        for row in range(top, top + 6):
            image[row * SIDE + left : row * SIDE + left + 6] = b"\xff" * 6
        pixels += image
    return Digits(bytes(pixels), bytes(index % 10 for index in range(count)))


def centre(image: bytes) -> tuple[float, float]:
    total = sum(image)
    rows = sum((i // SIDE) * v for i, v in enumerate(image)) / total
    cols = sum((i % SIDE) * v for i, v in enumerate(image)) / total
    return rows, cols


# --- the hidden sample ---------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_digits_and_another_seed_others():
    pool = blob_digits(100)
    first, again = hidden_sample(pool, 42, 30), hidden_sample(pool, 42, 30)
    assert first == again
    other = hidden_sample(pool, 43, 30)
    assert other.pool_indices != first.pool_indices
    assert other.digits.pixels != first.digits.pixels


def test_a_sample_is_drawn_from_the_pool_with_its_labels():
    pool = blob_digits(100)
    sample = hidden_sample(pool, 1, 30)
    assert sample.digits.count == 30 and sample.pool_size == 100 and sample.seed == 1
    assert len(set(sample.pool_indices)) == 30
    assert all(0 <= i < 100 for i in sample.pool_indices)
    assert sample.digits.labels == bytes(pool.labels[i] for i in sample.pool_indices)


def test_a_small_pool_is_sent_whole():
    sample = hidden_sample(blob_digits(12), 5, 800)
    assert sorted(sample.pool_indices) == list(range(12))


def test_every_digit_is_changed_but_only_lightly():
    pool = blob_digits(60)
    sample = hidden_sample(pool, 9, 60)
    for position, index in enumerate(sample.pool_indices):
        original, sent = pool.image(index), sample.digits.image(position)
        assert sent != original  # no table of the pool's pixels knows it
        (row, col), (new_row, new_col) = centre(original), centre(sent)
        # turned at most 8 degrees about the image's centre, moved under a pixel
        assert abs(new_row - row) <= 2.0 and abs(new_col - col) <= 2.0
        assert 0.8 < sum(sent) / sum(original) < 1.2  # the ink is kept


def test_the_sample_depends_on_the_seed_alone():
    pool = blob_digits(40)
    first = hidden_sample(pool, 3, 10)
    state = random.getstate()
    random.seed(12345)  # the global generator's state plays no part
    try:
        assert hidden_sample(pool, 3, 10) == first
    finally:
        random.setstate(state)


# --- --hidden-dir --------------------------------------------------------------------------------


def write_idx(folder: Path, digits: Digits, stem: str = "hidden", gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = encode_idx_images(digits.pixels, digits.count)
    labels = encode_idx_labels(digits.labels)
    suffix = ".gz" if gz else ""
    (folder / f"{stem}-images-idx3-ubyte{suffix}").write_bytes(
        gzip.compress(images) if gz else images
    )
    (folder / f"{stem}-labels-idx1-ubyte{suffix}").write_bytes(
        gzip.compress(labels) if gz else labels
    )


def test_a_hidden_dir_in_idx_format_is_read(tmp_path):
    digits = blob_digits(15)
    write_idx(tmp_path / "plain", digits, "t10k")
    write_idx(tmp_path / "gz", digits, gz=True)
    assert read_hidden_dir(tmp_path / "plain") == digits
    assert read_hidden_dir(tmp_path / "gz") == digits


def test_hidden_dir_problems_are_explained(tmp_path):
    with pytest.raises(DatasetError, match=r"--hidden-dir .*absent: no such folder"):
        read_hidden_dir(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"no \*-images-idx3-ubyte files; it must hold one"):
        read_hidden_dir(empty)
    two = tmp_path / "two"
    write_idx(two, blob_digits(3), "a")
    write_idx(two, blob_digits(3), "b")
    with pytest.raises(DatasetError, match=r"2 \(a-images-idx3-ubyte, b-images-idx3-ubyte\)"):
        read_hidden_dir(two)
    uneven = tmp_path / "uneven"
    write_idx(uneven, blob_digits(3))
    (uneven / "hidden-labels-idx1-ubyte").write_bytes(encode_idx_labels(bytes([1, 2])))
    with pytest.raises(DatasetError, match=r"holds 3 images but .* holds 2 labels"):
        read_hidden_dir(uneven)
    swapped = tmp_path / "swapped"
    write_idx(swapped, blob_digits(3))
    labels = swapped / "hidden-labels-idx1-ubyte"
    (swapped / "hidden-images-idx3-ubyte").write_bytes(labels.read_bytes())
    with pytest.raises(DatasetError, match="is not that of MNIST images"):
        read_hidden_dir(swapped)
    none = tmp_path / "none"
    write_idx(none, Digits(b"", b""))
    with pytest.raises(DatasetError, match="the files hold no digits"):
        read_hidden_dir(none)


def test_grade_stops_on_a_bad_hidden_dir_and_a_bad_seed(tmp_path, capsys):
    code = main(["grade", str(tmp_path), "--hidden-dir", str(tmp_path / "nowhere")])
    assert code == 2
    assert "--hidden-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["grade", str(tmp_path), "--seed", "-3"])
    assert stopped.value.code == 2
    assert "'-3': give a whole number of at least 0" in capsys.readouterr().err


# --- the rubric ----------------------------------------------------------------------------------


def rubric_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_RUBRIC.read_text()
    assert old in text
    path = tmp_path / "rubric.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_integrity_penalty_is_off_by_default_and_validated(tmp_path):
    assert load_rubric().integrity_penalty is False
    on = rubric_with(tmp_path, "integrity_penalty = false", "integrity_penalty = true")
    assert load_rubric(on).integrity_penalty is True
    bad = rubric_with(tmp_path, "integrity_penalty = false", 'integrity_penalty = "yes"')
    with pytest.raises(RubricError) as raised:
        load_rubric(bad)
    assert str(raised.value).startswith(f"{bad}: integrity_penalty: must be true")
    few = rubric_with(tmp_path, "heldout_digits = 800", "heldout_digits = 3")
    with pytest.raises(
        RubricError, match=r"limits\.heldout_digits: must be a whole number at least 10, got 3$"
    ):
        load_rubric(few)


# --- model archives ------------------------------------------------------------------------------


def mar(path: Path, serialized: str | None, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        if serialized is not None:
            manifest = {"model": {"modelName": "mnist", "serializedFile": serialized}}
            archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_the_serialized_file_of_an_archive_is_hashed(tmp_path):
    weights = b"weights of a trained model"
    found = serialized_weights(mar(tmp_path / "a.mar", "mnist_cnn.pt", {"mnist_cnn.pt": weights}))
    assert found == Weights("mnist_cnn.pt", hashlib.sha256(weights).hexdigest())


def test_unreadable_archives_say_why(tmp_path):
    no_manifest = serialized_weights(mar(tmp_path / "a", None, {}))
    assert isinstance(no_manifest, Unreadable)
    assert "has no MAR-INF/MANIFEST.json" in no_manifest.why
    missing = serialized_weights(mar(tmp_path / "b", "w.pt", {"other.pt": b"x"}))
    assert isinstance(missing, Unreadable)
    assert "does not hold the serialized file w.pt" in missing.why
    (tmp_path / "c").write_bytes(b"not a zip")
    not_zip = serialized_weights(tmp_path / "c")
    assert isinstance(not_zip, Unreadable) and "is not a zip archive" in not_zip.why


def test_what_the_server_runs_and_where_its_models_are():
    java = (
        "java -Dmodel_server_home=/usr/lib/python3/dist-packages -cp .:/x/* "
        "org.pytorch.serve.ModelServer --python /usr/bin/python3 -f config.properties "
        "-s model-store -m mnist=mnist.mar"
    )
    lines = ["/bin/bash /usr/local/bin/dockerd-entrypoint.sh serve", java]
    assert is_torchserve(lines)
    assert not is_torchserve(["python3 /srv/lookup.py", "sh -c 'torchserve --foreground'"])
    assert model_store(lines, "/home/model-server") == "/home/model-server/model-store"
    assert model_store([java.replace("-s model-store", "-s /models")], "/w") == "/models"
    assert model_store(["python3 server.py -s store"], "/") is None
    assert archive_name([{"modelName": "mnist", "modelUrl": "mnist.mar"}]) == "mnist.mar"
    assert archive_name({"status": "Healthy"}) is None


# --- flags, penalty, re-scoring, clearing --------------------------------------------------------

MISMATCH = {
    "server_is_torchserve": True,
    "served_model_sha256": "a" * 64,
    "served_model_file": "mnist_cnn.pt",
    "served_model_archive": "/home/model-server/model-store/mnist.mar",
    "expected_model_sha256": "b" * 64,
    "expected_model_origin": "trained",
}


def graded(measurements: dict[str, object]) -> SubmissionResult:
    result = SubmissionResult("alice", "/s/alice", "/r/alice")
    for check_id, points in (
        ("train.reported_accuracy", 10),
        ("serve.ping", 10),
        ("serve.sample_prediction", 10),
        ("serve.heldout_accuracy", 20),
    ):
        result.checks[check_id] = CheckResult(check_id, check_id, "passed", points, points)
    result.measurements.update(measurements)
    return result


def test_foreign_weights_are_flagged_and_points_kept_by_default():
    rubric = load_rubric()
    result = rescore(graded(dict(MISMATCH)), rubric, rubric.profile("offline"))
    assert [flag.id for flag in result.integrity_flags] == ["served-model"]
    assert result.flags[0].startswith("the served model is not the model training produced")
    assert "sha256 aaaaaaaaaaaa" in result.flags[0] and "bbbbbbbbbbbb" in result.flags[0]
    assert result.score == 50


def test_a_server_that_is_not_torchserve_is_flagged():
    rubric = load_rubric()
    measured = {"server_is_torchserve": False, "server_processes": ["python3 /srv/lookup.py"]}
    result = rescore(graded(measured), rubric, rubric.profile("offline"))
    assert result.flags == [
        "the server is not TorchServe: no TorchServe process (org.pytorch.serve.ModelServer) "
        "runs in the inference container (processes: python3 /srv/lookup.py); its answers do "
        "not come from a model served by TorchServe"
    ]


def test_matching_weights_raise_nothing():
    rubric = load_rubric()
    same = {**MISMATCH, "expected_model_sha256": "a" * 64}
    assert rescore(graded(same), rubric, rubric.profile("offline")).flags == []


def test_the_penalty_withholds_the_flagged_checks_points_until_cleared(tmp_path):
    rubric = load_rubric(
        rubric_with(tmp_path, "integrity_penalty = false", "integrity_penalty = true")
    )
    profile = rubric.profile("offline")
    result = rescore(graded(dict(MISMATCH)), rubric, profile)
    assert result.score == 20  # 30 points of the two prediction checks withheld
    held = result.checks["serve.heldout_accuracy"]
    assert (held.status, held.points, held.withheld_by) == ("passed", 0.0, ["served-model"])
    assert "grader flags clear alice:served-model" in held.message
    assert result.checks["serve.ping"].points == 10

    again = rescore(result, rubric, profile, cleared={"served-model"})
    assert again.score == 50 and again.flags == []
    assert again.integrity_flags[0].cleared
    assert again.checks["serve.heldout_accuracy"].message == ""


def test_rescoring_recomputes_derived_flags_and_keeps_others():
    rubric = load_rubric()
    profile = rubric.profile("offline")
    result = graded({"reported_accuracy": 0.99, "heldout_accuracy": 0.5, "heldout_total": 800})
    result.flag("training was given gpu 0 but trained on the CPU", "cpu-training")
    review(result, profile.targets, penalty=False)
    assert [f.id for f in result.integrity_flags] == ["cpu-training", "reported-accuracy"]
    result.measurements["heldout_accuracy"] = 0.95  # as measured on re-grading
    rescore(result, rubric, profile)
    assert [f.id for f in result.integrity_flags] == ["cpu-training"]


def test_a_reported_accuracy_nothing_measured_is_noted_unverified():
    rubric = load_rubric()
    profile = rubric.profile("offline")
    result = rescore(graded({"reported_accuracy": 0.975}), rubric, profile)
    assert any("0.9750 could not be checked" in note for note in result.notes), result.notes
    assert any(note.startswith("unverified") for note in result.notes)
    all_failed = {"heldout_accuracy": 0.0, "heldout_total": 800, "heldout_errors": 800}
    result.measurements.update(all_failed)
    assert any("could not be checked" in note for note in rescore(result, rubric, profile).notes)
    result.measurements.update(heldout_accuracy=0.97, heldout_errors=0)
    notes = rescore(result, rubric, profile).notes
    assert not any(note.startswith("unverified") for note in notes)


def test_cleared_flags_are_stored_apart(tmp_path):
    assert load_cleared(tmp_path) == {}
    clear_flag(tmp_path, "alice", "served-model", "weights retrained in class")
    clear_flag(tmp_path, "bob", "reported-accuracy")
    assert load_cleared(tmp_path) == {"alice": {"served-model"}, "bob": {"reported-accuracy"}}
    stored = json.loads((tmp_path / "flags-cleared.json").read_text())
    assert stored["cleared"]["alice"]["served-model"]["note"] == "weights retrained in class"
    (tmp_path / "flags-cleared.json").write_text("{broken")
    with pytest.raises(GraderError, match=r"flags-cleared\.json: unreadable"):
        load_cleared(tmp_path)


def write_results(report_dir: Path, penalty: bool) -> None:
    report = GradingReport("r1", "offline", str(DEFAULT_RUBRIC), "0", seed=77)
    result = graded(dict(MISMATCH))
    review(result, load_rubric().profile("offline").targets, penalty)
    report.submissions["alice"] = result
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "results.json").write_text(json.dumps(report.to_json()))


def test_grader_flags_list_and_clear(tmp_path, capsys):
    reports = tmp_path / "reports"
    write_results(reports, penalty=True)
    assert main(["flags", "list", "--report-dir", str(reports)]) == 0
    assert "alice:served-model  STANDING  the served model is not" in capsys.readouterr().out

    assert main(["flags", "clear", "alice:served-model", "--report-dir", str(reports)]) == 0
    assert "cleared alice:served-model; score 50/50" in capsys.readouterr().out
    results = json.loads((reports / "results.json").read_text())
    alice = results["submissions"]["alice"]
    assert alice["score"] == 50 and alice["flags"] == []
    assert alice["integrity_flags"][0]["cleared"] is True
    assert results["seed"] == 77
    assert load_cleared(reports) == {"alice": {"served-model"}}
    assert (reports / "junit.xml").is_file() and (reports / "gradebook.csv").is_file()
    main(["flags", "list", "--report-dir", str(reports)])
    assert "alice:served-model  cleared" in capsys.readouterr().out


def test_grader_flags_clear_names_the_flags_there_are(tmp_path, capsys):
    reports = tmp_path / "reports"
    write_results(reports, penalty=False)
    assert main(["flags", "clear", "alice:made-up", "--report-dir", str(reports)]) == 2
    err = capsys.readouterr().err
    assert "no flag 'alice:made-up'" in err and "its flags are: alice:served-model" in err
    assert main(["flags", "clear", "x:y", "--report-dir", str(tmp_path / "none")]) == 2
    assert "no results here" in capsys.readouterr().err


def test_results_written_before_flag_ids_are_read():
    from grader.domain.results import submission_from_json, submission_to_json

    data = submission_to_json(graded({}))
    del data["integrity_flags"]
    data["flags"] = ["an old flag"]
    result = submission_from_json(data)
    assert result.flags == ["an old flag"] and result.integrity_flags[0].id == "flag-1"


def test_hidden_dir_is_refused_on_ray(tmp_path, capsys):
    write_idx(tmp_path / "digits", blob_digits(5))
    argv = ["grade", str(tmp_path), "--backend", "ray", "--hidden-dir", str(tmp_path / "digits")]
    assert main(argv) == 2
    assert "--hidden-dir works with the local backend only" in capsys.readouterr().err

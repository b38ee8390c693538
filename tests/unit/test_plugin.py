"""The plugin's behaviour inside pytest, and the CLI's exit codes, without running containers."""

from __future__ import annotations

import json

import pytest

from grader.engine.containers import device_requests
from tests.cli import run_grader


def test_plugin_is_inactive_without_submissions(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.check("train.build")
        def test_marked():
            pass

        def test_grading_fixture_skips(grading):
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*grading is off: pass --submissions PATH*"])


def test_options_are_documented(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*lab5-grader*", "*--submissions=PATH*", "*--report-dir=DIR*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--submissions", "nowhere"], "ERROR: nowhere: no such file or folder"),
        (["--submissions", ".", "--profile", "gpu"], "*no profile 'gpu'; it defines offline, full"),
        (["--submissions", ".", "--gpus", "many"], "ERROR: --gpus 'many': use auto, none, all*"),
        (["--submissions", ".", "--rubric", "missing.toml"], "*missing.toml: no such rubric file"),
    ],
)
def test_usage_errors(pytester, args, message):
    pytester.mkdir("sub").joinpath("train").mkdir()
    if args[1] == ".":
        args[1] = "sub"
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_grade_without_an_engine_is_a_one_line_error(tmp_path):
    done = run_grader(
        "grade", "submissions", "--report-dir", str(tmp_path),
        env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"},
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [f"ERROR: no Docker engine answers at unix://{tmp_path}/no.sock; "
                      "run `grader setup` (as root on Debian it installs and starts one) "
                      "or start Docker yourself"]  # fmt: skip


def test_setup_with_an_unreachable_docker_host(tmp_path):
    done = run_grader("setup", env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"grader: error: no Docker engine answers at DOCKER_HOST=unix://{tmp_path}/no.sock; "
        "start it or unset DOCKER_HOST"
    )


def test_grade_with_a_bad_profile(tmp_path):
    done = run_grader("grade", "submissions", "--profile", "huge", "--report-dir", str(tmp_path))
    assert done.returncode == 2
    assert "no profile 'huge'" in done.stderr


def test_data_for_full_profile_needs_mnist(tmp_path):
    done = run_grader("data", "--profile", "full", env={"GRADER_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "grader data --profile full --mnist-dir DIR" in done.stderr


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("none", []),
        ("all", [{"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]],
                  "Options": {}}]),
        ("0,2", [{"Driver": "", "Count": 0, "DeviceIDs": ["0", "2"], "Capabilities": [["gpu"]],
                  "Options": {}}]),
    ],
)  # fmt: skip
def test_device_requests(gpus, expected):
    assert [dict(request) for request in device_requests(gpus)] == expected


def test_device_requests_reject_nonsense():
    with pytest.raises(ValueError, match="neither none, all nor a list of ids"):
        device_requests(",")


def test_rubric_show(tmp_path):
    done = run_grader("rubric", "show", "--profile", "full")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[1].startswith("profile  full: Real MNIST")
    assert "checks (100 points)" in lines
    assert any(line.split()[:2] == ["serve.heldout_accuracy", "20"] for line in lines)
    assert any(line.split() == ["heldout_accuracy", "0.98"] for line in lines)
    as_json = json.loads(run_grader("rubric", "show", "--json").stdout)
    assert as_json["profile"] == "offline" and as_json["max_score"] == 100
    bad = tmp_path / "rubric.toml"
    bad.write_text("[checks.x]\n")
    done = run_grader("rubric", "show", "--rubric", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"grader: error: {bad}: checks.x: unknown check id; known ones are "
        "env.alpine_run, env.alpine_interactive, train.dockerfile, train.build, train.run, "
        "train.reported_accuracy, "
        "train.model_artifact, serve.dockerfile, serve.build, serve.ping, serve.model_ready, "
        "serve.sample_prediction, serve.heldout_accuracy"
    )


def test_resume_and_force_exclude_each_other():
    done = run_grader("grade", "--resume", "--force", "submissions")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "grader grade: error: argument --force: not allowed with argument --resume"
    )

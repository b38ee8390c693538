"""The hint catalog and the table `grader check` ends with."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.domain.hints import (
    CATALOG,
    LANGUAGES,
    check_table,
    default_language,
    hints_for,
    load_catalog,
)
from grader.domain.results import CheckResult, SubmissionResult


def _result(tmp_path: Path, **checks: tuple[str, str]) -> SubmissionResult:
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    for check_id, (status, message) in checks.items():
        check_id = check_id.replace("_", ".", 1)
        points = 10.0 if status == "passed" else 0.0
        result.checks[check_id] = CheckResult(check_id, check_id, status, points, 10, message)  # type: ignore[arg-type]
    return result


def test_every_hint_speaks_every_language():
    assert len(CATALOG) == 17
    for spec in CATALOG:
        assert set(spec.texts) == set(LANGUAGES)
        assert all(text.strip() for text in spec.texts.values())
        assert any("\u4e00" <= char <= "\u9fff" for char in spec.texts["zh"]), spec.id


def test_a_broken_catalog_is_refused_with_the_entry_named(tmp_path):
    path = tmp_path / "hints.toml"
    path.write_text("[lonely]\nchecks = ['train.run']\npattern = 'x'\nen = 'x'\ncolour = 1\n")
    with pytest.raises(ValueError) as error:
        load_catalog(path)
    assert str(error.value) == f"{path}: hint 'lonely': unknown keys colour; missing zh"


def test_the_language_follows_the_locale(monkeypatch):
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert default_language() == "zh"
    monkeypatch.setenv("LC_ALL", "en_US.UTF-8")  # LC_ALL wins over LANG
    assert default_language() == "en"


def test_hints_explain_failures_and_passed_checks_get_none(tmp_path):
    loopback = "TorchServe listens on 127.0.0.1:8080 inside the container, which ..."
    result = _result(tmp_path, serve_ping=("failed", loopback), train_run=("passed", ""))
    assert [(h.id, h.check_id) for h in hints_for(result)] == [("server-loopback", "serve.ping")]
    result.checks["serve.ping"].status = "passed"
    assert hints_for(result) == []


def test_model_not_in_output_is_left_to_a_failed_training(tmp_path):
    missing = "training did not write mnist_cnn.pt to $OUTPUT_DIR (/output); save the model"
    ran = _result(tmp_path, train_run=("passed", ""), train_model_artifact=("failed", missing))
    assert [hint.id for hint in hints_for(ran)] == ["model-not-in-output"]
    crashed = _result(
        tmp_path,
        train_run=("failed", "exited with code 1"),
        train_model_artifact=("failed", missing),
    )
    assert hints_for(crashed) == []


def test_a_large_build_context_is_advice_above_the_limit(tmp_path):
    for size, expected in (("99.9", []), ("100.1", ["huge-context"])):
        (tmp_path / "train-build.log").write_text(f"build context: 3 files, {size} MB\nStep 1/2\n")
        result = _result(tmp_path, train_build=("passed", ""))
        assert [hint.id for hint in hints_for(result)] == expected


def test_token_advice_comes_from_the_notes_not_from_server_logs(tmp_path):
    (tmp_path / "server.log").write_text("disable_token_authorization=true\n")
    result = _result(tmp_path, serve_ping=("passed", ""))
    assert hints_for(result) == []
    result.note(
        "token authorization is on (TorchServe's default since 0.11.1); the grader read ..."
    )
    assert [hint.id for hint in hints_for(result, "zh")] == ["token-auth"]


def test_the_table_with_hints_and_plain_messages(tmp_path):
    result = _result(
        tmp_path,
        train_build=("failed", "COPY failed: file not found in build context: stat x: no file"),
        train_run=("failed", "training exited with code 3 (see the training log)\nTraceback"),
        serve_ping=("skipped", "skipped: the inference image did not build"),
    )
    lines = check_table(result, "en")
    assert lines[1].split() == ["check", "result", "points"]
    assert lines[2].split() == ["train.build", "FAILED", "0/10"]
    assert lines[4].split() == ["serve.ping", "skipped", "0/10"]
    assert lines[5].split() == ["total", "0/30"]
    assert lines[7] == "What to change:"
    assert lines[8].startswith("- [train.build] A COPY or ADD names a file")
    assert lines[9] == "- [train.run] training exited with code 3 (see the training log)"
    zh = check_table(result, "zh")
    assert zh[2].split() == ["train.build", "未通过", "0/10"] and zh[7] == "修改建议:"


def test_a_clean_submission_is_told_so(tmp_path):
    result = _result(tmp_path, train_build=("passed", ""))
    assert check_table(result, "en")[-1] == "Every check passed."
    assert check_table(result, "zh")[-1] == "所有检查均已通过。"


def test_an_infrastructure_error_gets_no_advice_to_change_the_submission(tmp_path):
    # A message a catalog entry would otherwise match: the hint must not fire on the harness's
    # own failure.
    result = _result(
        tmp_path,
        train_build=("error", "infrastructure error: COPY failed: file not found in build context"),
    )
    assert hints_for(result, "en") == []
    lines = check_table(result, "en")
    assert lines[-1].startswith("- [train.build] not your submission's fault")
    assert "run it again" in lines[-1]
    assert check_table(result, "zh")[-1].startswith("- [train.build] 不是提交内容的问题")


def test_a_start_script_with_crlf_endings_is_named_and_not_mistaken_for_a_short_lived_server(
    tmp_path,
):
    exited = "the server container exited with code 1 right after it started; ..."
    # What runc says when a script's #! line ends in a carriage return.
    (tmp_path / "server.log").write_text("exec ./start.sh: no such file or directory\n")
    result = _result(tmp_path, serve_ping=("failed", exited))
    hints = hints_for(result)
    assert [(h.id, h.check_id) for h in hints] == [("crlf-line-endings", "serve.ping")]
    assert "CRLF" in hints[0].text and "CRLF" in hints_for(result, "zh")[0].text
    # Run through bash instead, every line ends in a stray \r.
    (tmp_path / "server.log").write_text("start.sh: line 3: $'\\r': command not found\n")
    assert [h.id for h in hints_for(result)] == ["crlf-line-endings", "server-exits"]
    (tmp_path / "server.log").write_text("Model server started.\n")
    assert [h.id for h in hints_for(result)] == ["server-exits"]


def test_an_inference_api_on_another_port_is_told_to_move_to_8080(tmp_path):
    # Seen in the server's log alone (the message may say something else) and in the message.
    result = _result(tmp_path, serve_ping=("failed", "GET /ping did not answer"))
    (tmp_path / "server.log").write_text("Inference address: http://0.0.0.0:8000\n")
    result.checks["serve.ping"].log_excerpt = "Inference address: http://0.0.0.0:8000"
    assert [h.id for h in hints_for(result)] == ["server-wrong-port"]
    (tmp_path / "elsewhere").mkdir()
    right = _result(tmp_path / "elsewhere", serve_ping=("failed", "GET /ping did not answer"))
    right.checks["serve.ping"].log_excerpt = "Inference address: http://0.0.0.0:8080"
    assert [h.id for h in hints_for(right)] == []
    told = _result(tmp_path, serve_ping=("failed", "the inference API is on another port, so"))
    hints = hints_for(told, "zh")
    assert [h.id for h in hints] == ["server-wrong-port"] and "8080" in hints[0].text

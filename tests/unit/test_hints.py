"""The hint catalog and the table `grader check` ends with.

Hints are picked by the reason code a check recorded and name its facts; these tests build
results from codes and facts, never from copies of the harness's messages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grader.cli.main import main
from grader.domain import hints
from grader.domain.checks import check_ids
from grader.domain.errors import CatalogError
from grader.domain.hints import (
    LANGUAGES,
    catalog,
    check_table,
    default_language,
    hints_for,
    load_catalog,
)
from grader.domain.reasons import ANY_CHECK, REASONS, Reason, is_known, reason
from grader.domain.results import CheckResult, SubmissionResult
from grader.engine.containers import BuildResult
from grader.stages.build import build_failure

GRADER = Path(__file__).resolve().parents[2] / "grader"
CJK = re.compile("[\u4e00-\u9fff]")


def _result(tmp_path: Path, **checks: tuple[str, str]) -> SubmissionResult:
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    for check_id, (status, message) in checks.items():
        check_id = check_id.replace("_", ".", 1)
        points = 10.0 if status == "passed" else 0.0
        result.checks[check_id] = CheckResult(check_id, check_id, status, points, 10, message)  # type: ignore[arg-type]
    return result


def _failed(result: SubmissionResult, why: Reason, message: str = "it failed") -> CheckResult:
    """A failed check recorded with `why`, as the plugin records one."""
    check_id = why.code.split("/")[0]
    check = CheckResult(check_id, check_id, "failed", 0.0, 10, message)
    check.failed_for(why)
    result.checks[check_id] = check
    return check


# Distinct values, so that a fact shown in a text can be told from the text around it.
SAMPLE_FACTS = {
    "file": "utils.py",
    "image": "pytorch/pytorch:9.9-no-such-tag",
    "limit_s": 777,
    "model": "mnist",
    "seen": "mnist_v2",
    "target": 0.987,
    "body": "<html>seven</html>",
}


def _sample(code: str) -> Reason:
    facts = {name: SAMPLE_FACTS.get(name, f"<{name}>") for name in REASONS[code]}
    return Reason(code, facts)


def test_every_hint_speaks_every_language():
    assert len(catalog()) == 17
    for spec in catalog():
        assert set(spec.texts) == set(LANGUAGES)
        assert all(text.strip() for text in spec.texts.values())
        assert CJK.search(spec.texts["zh"]), spec.id


def test_every_reason_a_hint_explains_is_one_the_harness_gives():
    for spec in catalog():
        for code in spec.reasons:
            assert is_known(code), f"{spec.id}: {code}"
            assert code in REASONS, f"{spec.id}: {code} is declared for no particular check"


def test_every_declared_reason_is_raised_somewhere_in_the_harness():
    sources = "\n".join(
        path.read_text() for path in GRADER.rglob("*.py") if path.name != "reasons.py"
    )
    for code in [*REASONS, *ANY_CHECK]:
        name = code.split("/")[-1]
        # reason("name", ...), Reason("check/name", ...), reason(f"{half}.build/name", ...)
        made = rf'\b[Rr]eason\(\s*f?"(?:[\w.{{}}]+/)?{re.escape(name)}"'
        assert re.search(made, sources), f"{code}: no part of grader/ gives this reason"


def test_every_reason_belongs_to_a_check_of_the_table():
    assert {code.split("/")[0] for code in REASONS} <= set(check_ids())


def test_a_reason_name_carries_the_same_facts_on_every_check():
    facts: dict[str, tuple[str, ...]] = {}
    for code, names in REASONS.items():
        name = code.split("/")[1]
        assert facts.setdefault(name, names) == names, code


@pytest.mark.parametrize(
    ("hint_id", "code"), [(spec.id, code) for spec in catalog() for code in spec.reasons]
)
@pytest.mark.parametrize("language", LANGUAGES)
def test_each_hint_fires_on_its_reason_with_the_facts_filled_in(tmp_path, hint_id, code, language):
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    why = _sample(code)
    _failed(result, why)
    found = hints_for(result, language)
    assert [(hint.id, hint.check_id) for hint in found] == [(hint_id, code.split("/")[0])]
    text = found[0].text
    assert "{" + "file}" not in text and not re.search(r"\{[a-z_]+\}", text), text
    template = next(spec for spec in catalog() if spec.id == hint_id).texts[language]
    for name, value in why.facts.items():
        if "{" + name + "}" in template:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert shown in text, f"{name} = {value!r} is not in {text!r}"
    if language == "zh":
        assert CJK.search(text)


def test_the_facts_named_by_the_brief_examples_are_shown(tmp_path):
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    _failed(result, reason("train.build/copy-missing", file="utils.py"))
    _failed(result, reason("serve.model_ready/wrong-model-name", model="mnist", seen="minst"))
    _failed(result, reason("train.run/timeout", limit_s=900.0))
    for language in LANGUAGES:
        texts = {hint.id: hint.text for hint in hints_for(result, language)}
        assert "utils.py" in texts["copy-missing"]
        assert "minst" in texts["model-name"] and "mnist" in texts["model-name"]
        assert "900" in texts["train-too-slow"] and "900.0" not in texts["train-too-slow"]


def test_rewording_a_message_keeps_its_hint(tmp_path):
    for message in (
        "training did not finish within the limit of 900 s and was killed",
        "Training overran its 900-second budget.",
        "",
    ):
        result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
        _failed(result, reason("train.run/timeout", limit_s=900), message)
        assert [hint.id for hint in hints_for(result)] == ["train-too-slow"]
    # And the old wording without the reason (or with another) is no longer enough.
    result = _result(tmp_path, train_run=("failed", "did not finish within the limit of 9 s"))
    assert hints_for(result) == []


def test_a_missing_copy_source_in_the_builders_words_names_the_file():
    # What Docker's classic builder and BuildKit say when a COPY source is not in the context.
    classic = (
        "COPY failed: file not found in build context or excluded by .dockerignore: "
        "stat utils.py: file does not exist"
    )
    buildkit = 'failed to compute cache key: failed to calculate checksum: "/utils.py" not found'

    def built(ok: bool, error: str | None = None, timed_out: bool = False) -> BuildResult:
        return BuildResult(tag="t", ok=ok, log_path=Path("log"), duration_s=1.0, error=error,
                           timed_out=timed_out)  # fmt: skip

    for error in (classic, buildkit):
        assert build_failure(built(False, error), 600) == Reason(
            "copy-missing", {"file": "utils.py"}
        )
    timed_out = built(False, "whatever it says", timed_out=True)
    assert build_failure(timed_out, 600) == Reason("timeout", {"limit_s": 600})
    other = "The command '/bin/sh -c x' returned a non-zero code: 2"
    assert build_failure(built(False, other), 600) == reason("failed", error=other)
    assert build_failure(built(True), 600) is None


def test_a_reason_raised_without_its_check_is_given_the_checks_id():
    base = Reason("base-image", {"image": "x:1"})
    assert base.within("serve.build") == Reason("serve.build/base-image", {"image": "x:1"})
    assert reason("check-time", limit_s=5).within("train.run").code == "train.run/check-time"
    with pytest.raises(ValueError, match=r"'train\.run/base-image' is not declared"):
        base.within("train.run")
    with pytest.raises(ValueError, match=r"carries facts \['name'\], declared \['file'\]"):
        reason("train.build/copy-missing", name="x")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[lonely]\nreasons = ['train.run/timeout']\nen = 'x'\nzh = 'x'\ncolour = 1\n",
         "lonely.colour", "unknown key"),
        ("[lonely]\nreasons = ['train.run/timeout']\nen = 'x'\n", "lonely.zh", "missing"),
        ("[lonely]\nreasons = ['train.run/too-slow']\nen = 'x'\nzh = 'x'\n",
         "lonely.reasons", "'train.run/too-slow' is no reason code the harness gives"),
        ("[lonely]\nreasons = ['train.run/timeout']\nen = '{file}'\nzh = 'x'\n",
         "lonely.en", "{file} is no fact of train.run/timeout"),
        ("[lonely]\nchecks = ['train.run']\npattern = '('\nen = 'x'\nzh = 'x'\n",
         "lonely.pattern", "not a regular expression"),
        ("[lonely]\npattern = 'x'\nen = 'x'\nzh = 'x'\n", "lonely.checks", "needed with"),
        ("[lonely]\nen = 'x'\nzh = 'x'\n", "lonely", "says nothing of when it applies"),
        ("[lonely\n", "", "not valid TOML"),
        ("lonely = 'x'\n", "lonely", "must be a table, got 'x'"),
        ("[lonely]\nreasons = 'train.run/timeout'\nen = 'x'\nzh = 'x'\n", "lonely.reasons",
         "must be a list of strings, got 'train.run/timeout'"),
        ("[lonely]\nreasons = ['train.run/timeout']\nen = 'x'\nzh = 'x'\nfailed_only = 'no'\n",
         "lonely.failed_only", "must be true or false, got 'no'"),
        ("[lonely]\nreasons = ['train.run/timeout']\nen = 'x'\nzh = ' '\n", "lonely.zh",
         "empty; every hint has a text in every language"),
        ("[lonely]\nchecks = ['train.run']\npattern = 'x'\nmore_than = 'a lot'\nen = 'x'\n"
         "zh = 'x'\n", "lonely.more_than", "must be a number, got 'a lot'"),
        ("[lonely]\nreasons = ['train.run/timeout']\nmore_than = 3\nen = 'x'\nzh = 'x'\n",
         "lonely.more_than", "only with a pattern whose first group is a number; add the "
         "pattern or leave more_than out"),
    ],
)  # fmt: skip
def test_a_broken_catalog_is_one_line_naming_the_file_and_key(tmp_path, text, key, problem):
    path = tmp_path / "hints.toml"
    path.write_text(text)
    with pytest.raises(CatalogError) as error:
        load_catalog(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}{': ' if key else ''}")
    assert problem in message


def test_a_catalog_entry_left_short_takes_the_defaults(tmp_path):
    path = tmp_path / "hints.toml"
    path.write_text("[lonely]\nreasons = ['train.run/timeout']\nen = 'E {limit_s}'\nzh = 'Z'\n")
    (spec,) = load_catalog(path)
    assert (spec.id, spec.reasons, spec.texts) == (
        "lonely",
        ("train.run/timeout",),
        {"en": "E {limit_s}", "zh": "Z"},
    )
    assert spec.failed_only is True  # a hint explains a failure unless it says otherwise
    assert (spec.checks, spec.unless_failed) == ((), ())
    assert (spec.pattern, spec.measured, spec.more_than) == (None, None, None)


def test_the_catalog_is_read_on_first_use_so_a_broken_one_spares_other_commands(
    tmp_path, monkeypatch, capsys
):
    broken = tmp_path / "hints.toml"
    broken.write_text("[lonely]\nen = 'x'\n")
    monkeypatch.setattr(hints, "CATALOG_FILE", broken)
    catalog.cache_clear()
    try:
        assert main(["rubric", "show"]) == 0
        assert "heldout_accuracy" in capsys.readouterr().out
        result = _result(tmp_path, train_run=("failed", "x"))
        with pytest.raises(CatalogError, match=f"^{re.escape(str(broken))}: lonely.zh: "):
            hints_for(result)
    finally:
        catalog.cache_clear()


def test_the_language_follows_the_locale(monkeypatch):
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert default_language() == "zh"
    monkeypatch.setenv("LC_ALL", "en_US.UTF-8")  # LC_ALL wins over LANG
    assert default_language() == "en"


def test_hints_explain_failures_and_passed_checks_get_none(tmp_path):
    result = _result(tmp_path, train_run=("passed", ""))
    ping = _failed(result, reason("serve.ping/loopback-bind", address="127.0.0.1", port=8080))
    assert [(h.id, h.check_id) for h in hints_for(result)] == [("server-loopback", "serve.ping")]
    ping.status = "passed"
    assert hints_for(result) == []


def test_a_loopback_address_in_the_servers_own_log_is_enough(tmp_path):
    (tmp_path / "server.log").write_text("Inference address: http://127.0.0.1:8080\n")
    result = _result(tmp_path, serve_ping=("failed", "no answer"))
    assert [h.id for h in hints_for(result)] == ["server-loopback"]


def test_model_not_in_output_is_left_to_a_failed_training(tmp_path):
    not_written = reason("train.model_artifact/not-written", file="net.pt")
    ran = _result(tmp_path, train_run=("passed", ""))
    _failed(ran, not_written)
    hints = hints_for(ran)
    assert [hint.id for hint in hints] == ["model-not-in-output"]
    assert "'net.pt'" in hints[0].text
    crashed = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    _failed(crashed, reason("train.run/exit-code", exit_code="1"))
    _failed(crashed, not_written)
    assert hints_for(crashed) == []


def test_a_large_build_context_is_advice_above_the_limit(tmp_path):
    for size, expected in (("99.9", []), ("100.1", ["huge-context"])):
        (tmp_path / "train-build.log").write_text(f"build context: 3 files, {size} MB\nStep 1/2\n")
        result = _result(tmp_path, train_build=("passed", ""))
        assert [hint.id for hint in hints_for(result)] == expected


def test_token_advice_comes_from_what_was_measured_not_from_server_logs_or_notes(tmp_path):
    (tmp_path / "server.log").write_text("disable_token_authorization=true\n")
    result = _result(tmp_path, serve_ping=("passed", ""))
    result.note("token authorization is on (TorchServe's default since 0.11.1)")
    assert hints_for(result) == []
    result.measurements["server_token_auth"] = True
    assert [(h.id, h.check_id) for h in hints_for(result, "zh")] == [("token-auth", "serve.ping")]
    # Without a key to read, /ping fails for it.
    failed = SubmissionResult("alice", str(tmp_path / "x"), str(tmp_path / "x"))
    _failed(failed, reason("serve.ping/token-auth", status=400))
    assert [h.id for h in hints_for(failed)] == ["token-auth"]


def test_the_table_with_hints_and_plain_messages(tmp_path):
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    _failed(result, reason("train.build/copy-missing", file="requirements.txt"))
    _failed(
        result,
        reason("train.run/exit-code", exit_code="3"),
        "training exited with code 3 (see the training log)\nTraceback",
    )
    result.checks["serve.ping"] = CheckResult(
        "serve.ping", "serve.ping", "skipped", 0.0, 10, "skipped: the image did not build"
    )
    lines = check_table(result, "en")
    assert lines[1].split() == ["check", "result", "points"]
    assert lines[2].split() == ["train.build", "FAILED", "0/10"]
    assert lines[4].split() == ["serve.ping", "skipped", "0/10"]
    assert lines[5].split() == ["total", "0/30"]
    assert lines[7] == "What to change:"
    assert lines[8].startswith("- [train.build] A COPY or ADD names a file")
    assert "requirements.txt" in lines[8]
    assert lines[9] == "- [train.run] training exited with code 3 (see the training log)"
    zh = check_table(result, "zh")
    assert zh[2].split() == ["train.build", "未通过", "0/10"] and zh[7] == "修改建议:"
    assert "requirements.txt" in zh[8] and CJK.search(zh[8])


def test_a_clean_submission_is_told_so(tmp_path):
    result = _result(tmp_path, train_build=("passed", ""))
    assert check_table(result, "en")[-1] == "Every check passed."
    assert check_table(result, "zh")[-1] == "所有检查均已通过。"


def test_an_infrastructure_error_gets_no_advice_to_change_the_submission(tmp_path):
    # A reason a catalog entry explains: the hint must not fire on the harness's own failure.
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    _failed(result, reason("train.build/copy-missing", file="x")).status = "error"
    assert hints_for(result, "en") == []
    lines = check_table(result, "en")
    assert lines[-1].startswith("- [train.build] not your submission's fault")
    assert "run it again" in lines[-1]
    assert check_table(result, "zh")[-1].startswith("- [train.build] 不是提交内容的问题")


def test_a_start_script_with_crlf_endings_is_named_and_not_mistaken_for_a_short_lived_server(
    tmp_path,
):
    # What runc says when a script's #! line ends in a carriage return: not executable.
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    _failed(result, reason("serve.ping/not-executable", error="exec ./start.sh: no such file"))
    hints = hints_for(result)
    assert [(h.id, h.check_id) for h in hints] == [("crlf-line-endings", "serve.ping")]
    assert "CRLF" in hints[0].text and "CRLF" in hints_for(result, "zh")[0].text
    # Run through bash instead, the server exits and every line ends in a stray \r.
    exited = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    _failed(exited, reason("serve.ping/exited", exit_code=127))
    (tmp_path / "server.log").write_text("start.sh: line 3: $'\\r': command not found\n")
    assert [h.id for h in hints_for(exited)] == ["crlf-line-endings", "server-exits"]
    (tmp_path / "server.log").write_text("Model server started.\n")
    assert [h.id for h in hints_for(exited)] == ["server-exits"]


def test_a_crlf_training_command_the_engine_cannot_start_is_named(tmp_path):
    # The engine's words for it are a fact of the failure, read like a log.
    result = SubmissionResult("alice", str(tmp_path), str(tmp_path))
    error = "exec user process caused: no such file or directory"
    _failed(result, reason("train.run/cannot-start", error=error))
    assert [h.id for h in hints_for(result)] == ["crlf-line-endings"]


def test_an_inference_api_on_another_port_is_told_to_move_to_8080(tmp_path):
    # Seen in the server's log alone (whatever the check's reason) and by the reason.
    result = _result(tmp_path, serve_ping=("failed", "GET /ping did not answer"))
    result.checks["serve.ping"].log_excerpt = "Inference address: http://0.0.0.0:8000"
    assert [h.id for h in hints_for(result)] == ["server-wrong-port"]
    (tmp_path / "elsewhere").mkdir()
    right = _result(tmp_path / "elsewhere", serve_ping=("failed", "GET /ping did not answer"))
    right.checks["serve.ping"].log_excerpt = "Inference address: http://0.0.0.0:8080"
    assert [h.id for h in hints_for(right)] == []
    told = SubmissionResult("alice", str(tmp_path / "elsewhere"), str(tmp_path / "elsewhere"))
    _failed(told, reason("serve.ping/wrong-port", port=8080, ports="8081, 8082"))
    hints = hints_for(told, "zh")
    assert [h.id for h in hints] == ["server-wrong-port"] and "8080" in hints[0].text

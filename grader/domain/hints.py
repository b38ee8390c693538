"""Advice for students: what a failed check most likely means and what to change, in English
and Chinese.

A hint is picked by why a check failed, as data: the reason code the check recorded, whose facts
(a file name, a model name, a limit) fill in its text. Only what students' own programs print
is read with patterns: the build, training and server logs.
"""

from __future__ import annotations

import locale
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import msgspec

from grader.domain.checks import CHECKS
from grader.domain.config import Invalid, Schema, load_toml
from grader.domain.errors import CatalogError
from grader.domain.reasons import Fact, declared_facts, is_known
from grader.domain.results import CheckResult, SubmissionResult

LANGUAGES = ("en", "zh")
# The logs that belong to each check, in the submission's artifacts folder.
STAGE_LOGS = {check.id: check.logs for check in CHECKS if check.logs}
LOG_TAIL_CHARS = 20_000


CATALOG_FILE = Path(__file__).with_name("hints.toml")
TRIGGERS = ("reasons", "pattern", "measured")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
Text = Annotated[str, msgspec.Meta(description="a text for students")]


class HintEntry(Schema, frozen=True):
    """`[hint-id]` of hints.toml: when a hint applies, and its text in every language."""

    en: Text
    zh: Text
    reasons: tuple[str, ...] = ()  # reason codes (grader/domain/reasons.py) it explains
    checks: tuple[str, ...] = ()  # checks whose logs `pattern` is searched in, or `measured` is for
    pattern: str | None = None  # a regular expression, case-insensitive
    measured: str | None = None  # a measurement that, when true, calls for the advice
    # Most hints explain a failure; some are advice worth giving even when the check passed.
    failed_only: bool = True
    unless_failed: tuple[str, ...] = ()  # checks whose failure explains it better
    more_than: float | None = None  # the pattern's first group must be a number above this

    def __post_init__(self) -> None:
        for language in LANGUAGES:
            if not getattr(self, language).strip():
                raise Invalid(language, "empty; every hint has a text in every language")
        if not (self.reasons or self.pattern is not None or self.measured is not None):
            raise ValueError(f"says nothing of when it applies; give one of {', '.join(TRIGGERS)}")
        for code in self.reasons:
            if not is_known(code):
                raise Invalid("reasons", f"{code!r} is no reason code the harness gives")
        if (self.pattern is not None or self.measured is not None) and not self.checks:
            raise Invalid("checks", "needed with pattern or measured: the checks it is for")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise Invalid("pattern", f"not a regular expression ({error})") from None
        if self.more_than is not None and self.pattern is None:
            raise Invalid(
                "more_than",
                "only with a pattern whose first group is a number; add the pattern or leave "
                "more_than out",
            )
        for language in LANGUAGES:
            for name in PLACEHOLDER.findall(self.texts()[language]):
                if self.pattern is not None or self.measured is not None:
                    raise Invalid(
                        language, f"{{{name}}}: only a hint given for reasons alone names facts"
                    )
                lacking = [
                    code for code in self.reasons if name not in (declared_facts(code) or ())
                ]
                if lacking:
                    raise Invalid(language, f"{{{name}}} is no fact of {', '.join(lacking)}")

    def texts(self) -> dict[str, str]:
        """language -> text, with `{more_than}` written out."""
        texts = {language: str(getattr(self, language)) for language in LANGUAGES}
        if self.more_than is None:
            return texts
        more_than = f"{self.more_than:g}"
        return {
            language: text.replace("{more_than}", more_than) for language, text in texts.items()
        }


@dataclass(frozen=True)
class HintSpec:
    """An entry of the catalog as used: its pattern compiled, `{more_than}` written out."""

    id: str
    texts: dict[str, str]  # language -> text, `{fact}` filled in from the reason's facts
    reasons: tuple[str, ...]
    checks: tuple[str, ...]
    pattern: re.Pattern[str] | None
    measured: str | None
    failed_only: bool
    unless_failed: tuple[str, ...]
    more_than: float | None

    def applies(self, match: re.Match[str]) -> bool:
        return self.more_than is None or float(match.group(1)) > self.more_than

    def text(self, language: str, facts: Mapping[str, Fact] | None = None) -> str:
        """The advice in `language`, with the facts it names filled in."""
        return PLACEHOLDER.sub(lambda m: _shown((facts or {})[m[1]]), self.texts[language])


@dataclass(frozen=True)
class Hint:
    id: str
    check_id: str
    text: str


def _shown(fact: Fact) -> str:
    return f"{fact:g}" if isinstance(fact, float) else str(fact)


def load_catalog(path: Path | None = None) -> tuple[HintSpec, ...]:
    """The hint catalog, checked: every entry complete, in every language, explaining reasons the
    harness gives, naming only facts those reasons carry, with valid patterns. A problem is one
    line naming the file and the key."""
    path = path or CATALOG_FILE
    entries = load_toml(path, dict[str, HintEntry], CatalogError, what="hint catalog")
    return tuple(
        HintSpec(
            id=hint_id,
            texts=entry.texts(),
            reasons=entry.reasons,
            checks=entry.checks,
            pattern=(
                None
                if entry.pattern is None
                else re.compile(entry.pattern, re.IGNORECASE | re.MULTILINE)
            ),
            measured=entry.measured,
            failed_only=entry.failed_only,
            unless_failed=entry.unless_failed,
            more_than=entry.more_than,
        )
        for hint_id, entry in entries.items()
    )


@cache
def catalog() -> tuple[HintSpec, ...]:
    """The catalog, read on first use: a broken catalog fails only what needs hints."""
    return load_catalog()


def __getattr__(name: str) -> Any:  # `CATALOG` reads the catalog when first asked for
    if name == "CATALOG":
        return catalog()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_language() -> str:
    """zh when the user's locale is Chinese, else en."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(variable)
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    with_locale = locale.getlocale()[0] or ""
    return "zh" if with_locale.lower().startswith("zh") else "en"


def students_output(check: CheckResult, artifacts: Path) -> str:
    """What students' programs printed for a check: its log excerpt, the stage's logs, and the
    facts the engine reported for it (say, why a command could not be executed)."""
    parts = [check.log_excerpt, *(str(fact) for fact in check.facts.values())]
    for name in STAGE_LOGS.get(check.check_id, ()):
        path = artifacts / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(text[:2000] + text[-LOG_TAIL_CHARS:])
    return "\n".join(parts)


def hints_for(result: SubmissionResult, language: str = "en") -> list[Hint]:
    """The catalog's hints that apply to a graded submission, in check order."""
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r}: choose one of {', '.join(LANGUAGES)}")
    artifacts = Path(result.artifacts)
    hints: list[Hint] = []
    for check_id, check in result.checks.items():
        if check.status in ("skipped", "error"):  # an error is the harness's: nothing to change
            continue
        output: list[str] = []  # the logs, read once per check
        for spec in catalog():
            if any(hint.id == spec.id for hint in hints):
                continue
            if spec.failed_only and check.status == "passed":
                continue
            if any(_failed(result, other) for other in spec.unless_failed):
                continue
            if check.status == "failed" and check.reason in spec.reasons:
                hints.append(Hint(spec.id, check_id, spec.text(language, check.facts)))
                continue
            if check_id not in spec.checks:
                continue
            if spec.measured is not None and result.measurements.get(spec.measured):
                hints.append(Hint(spec.id, check_id, spec.text(language)))
                continue
            if spec.pattern is None:
                continue
            if not output:
                output.append(students_output(check, artifacts))
            match = spec.pattern.search(output[0])
            if match and spec.applies(match):
                hints.append(Hint(spec.id, check_id, spec.text(language)))
    return hints


def _failed(result: SubmissionResult, check_id: str) -> bool:
    check = result.checks.get(check_id)
    return check is not None and check.status == "failed"  # an error is the harness's, not theirs


WORDS = {
    "en": {
        "check": "check", "result": "result", "points": "points", "passed": "passed",
        "failed": "FAILED", "skipped": "skipped", "error": "ERROR", "total": "total",
        "hints": "What to change", "none": "Every check passed.", "reports": "reports and logs",
        "ours": "not your submission's fault: the grader could not run this check; run it again",
    },
    "zh": {
        "check": "检查项", "result": "结果", "points": "得分", "passed": "通过",
        "failed": "未通过", "skipped": "跳过", "error": "出错", "total": "总分",
        "hints": "修改建议", "none": "所有检查均已通过。", "reports": "报告和日志",
        "ours": "不是提交内容的问题: 评分程序未能运行此项检查, 请重新运行",
    },
}  # fmt: skip


def check_table(result: SubmissionResult, language: str) -> list[str]:
    """A student's summary: each check's result and points, then the hints that apply."""
    words = WORDS[language]
    width = max([len(words["check"]), *(len(check_id) for check_id in result.checks)])
    lines = ["", f"{words['check']:<{width}}  {words['result']:<8}  {words['points']}"]
    for check_id, check in result.checks.items():
        lines.append(
            f"{check_id:<{width}}  {words[check.status]:<8}  {check.points:g}/{check.max_points:g}"
        )
    lines.append(f"{words['total']:<{width}}  {'':<8}  {result.score:g}/{result.max_score:g}")
    hints = hints_for(result, language)
    failed = [check for check in result.checks.values() if check.status == "failed"]
    errors = [check for check in result.checks.values() if check.status == "error"]
    if not hints and not failed and not errors:
        return [*lines, "", words["none"]]
    lines += ["", f"{words['hints']}:"]
    explained = {hint.check_id for hint in hints}
    for hint in hints:
        lines.append(f"- [{hint.check_id}] {hint.text}")
    for check in failed:
        if check.check_id not in explained:  # no catalog entry fits: the check's own message
            lines.append(f"- [{check.check_id}] {check.message.strip().splitlines()[0]}")
    for check in errors:
        lines.append(f"- [{check.check_id}] {words['ours']} ({check.message.strip()[:200]})")
    return lines

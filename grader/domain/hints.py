"""Advice for students: what a failed check most likely means and what to change, in English
and Chinese, picked from what the harness observed (messages, logs) rather than from the check
id alone.
"""

from __future__ import annotations

import locale
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from grader.domain.checks import CHECKS
from grader.domain.results import SubmissionResult

LANGUAGES = ("en", "zh")
# The logs that belong to each check, in the submission's artifacts folder.
STAGE_LOGS = {check.id: check.logs for check in CHECKS if check.logs}
LOG_TAIL_CHARS = 20_000


CATALOG_FILE = Path(__file__).with_name("hints.toml")
SPEC_KEYS = {
    "checks",
    "pattern",
    "en",
    "zh",
    "failed_only",
    "in_logs",
    "unless_failed",
    "more_than",
}


@dataclass(frozen=True)
class HintSpec:
    """One entry of the catalog: when it applies, and what to tell the student."""

    id: str
    checks: tuple[str, ...]  # the checks it can explain
    pattern: re.Pattern[str]  # searched in what was observed for such a check
    texts: dict[str, str]  # language -> text
    # Most hints explain a failure; some are advice worth giving even when the check passed.
    failed_only: bool = True
    in_logs: bool = True  # False: only the check's message and the submission's notes count
    unless_failed: tuple[str, ...] = ()  # checks whose failure explains it better
    more_than: float | None = None  # the pattern's first group must be a number above this

    def applies(self, match: re.Match[str]) -> bool:
        return self.more_than is None or float(match.group(1)) > self.more_than


@dataclass(frozen=True)
class Hint:
    id: str
    check_id: str
    text: str


def load_catalog(path: Path = CATALOG_FILE) -> tuple[HintSpec, ...]:
    """The hint catalog, checked: every entry complete, in every language, with a valid pattern."""
    with open(path, "rb") as handle:
        entries = tomllib.load(handle)
    specs = []
    for hint_id, entry in entries.items():
        unknown = set(entry) - SPEC_KEYS
        missing = {"checks", "pattern", *LANGUAGES} - set(entry)
        if unknown or missing:
            raise ValueError(
                f"{path}: hint {hint_id!r}: "
                + "; ".join(
                    f"{what} {', '.join(sorted(keys))}"
                    for what, keys in (("unknown keys", unknown), ("missing", missing))
                    if keys
                )
            )
        more_than = entry.get("more_than")
        texts = {
            language: entry[language].replace("{more_than}", f"{more_than:g}")
            if more_than is not None
            else entry[language]
            for language in LANGUAGES
        }
        specs.append(
            HintSpec(
                id=hint_id,
                checks=tuple(entry["checks"]),
                pattern=re.compile(entry["pattern"], re.IGNORECASE | re.MULTILINE),
                texts=texts,
                failed_only=bool(entry.get("failed_only", True)),
                in_logs=bool(entry.get("in_logs", True)),
                unless_failed=tuple(entry.get("unless_failed", ())),
                more_than=more_than,
            )
        )
    return tuple(specs)


CATALOG = load_catalog()


def default_language() -> str:
    """zh when the user's locale is Chinese, else en."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(variable)
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    with_locale = locale.getlocale()[0] or ""
    return "zh" if with_locale.lower().startswith("zh") else "en"


def observed(result: SubmissionResult, check_id: str, artifacts: Path, logs: bool = True) -> str:
    """What the harness saw for a check: its message and the submission's notes, and with
    `logs` its log excerpt and the stage's logs."""
    check = result.checks[check_id]
    parts = [check.message, *result.notes]
    if not logs:
        return "\n".join(parts)
    parts.append(check.log_excerpt)
    for name in STAGE_LOGS.get(check_id, ()):
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
        seen: dict[bool, str] = {}  # with logs or without: read once per check
        for spec in CATALOG:
            if check_id not in spec.checks or (spec.failed_only and check.status == "passed"):
                continue
            if any(_failed(result, other) for other in spec.unless_failed):
                continue
            if spec.in_logs not in seen:
                seen[spec.in_logs] = observed(result, check_id, artifacts, spec.in_logs)
            match = spec.pattern.search(seen[spec.in_logs])
            if match and spec.applies(match) and all(h.id != spec.id for h in hints):
                hints.append(Hint(spec.id, check_id, spec.texts[language]))
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

"""The accuracy a training run reports: from `metrics.json`, else from its log.

Students print accuracy in many ways. Recognised, last test/validation line first:
    Test set: Average loss: 0.0267, Accuracy: 9913/10000 (99%)     (pytorch/examples)
    Test accuracy: 98.7%      accuracy=0.987      val_acc 0.987      Accuracy of the network: 98 %
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

_COUNT = re.compile(r"\bacc(?:uracy)?\b[^0-9\n]{0,20}?(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_KEYWORD = re.compile(r"\b(?:acc(?:uracy)?|val_acc|test_acc)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)\s*(%?)")
_EVALUATION = re.compile(r"\b(test|val|valid|validation|eval|evaluation)", re.IGNORECASE)
_TRAINING = re.compile(r"\btrain", re.IGNORECASE)


@dataclass(frozen=True)
class ReportedAccuracy:
    value: float  # a fraction in [0, 1]
    source: str  # where it was read, e.g. "metrics.json" or "training log line 42"
    text: str  # what was read, for the report


METRICS_MAX_BYTES = 1_000_000  # a few numbers are expected; more is not read
METRICS_MAX_DEPTH = 32  # nesting of objects and arrays; Python's parser recurses per level


def from_metrics(path: Path) -> ReportedAccuracy | str | None:
    """The accuracy in metrics.json; None when the file is absent; a problem as a string."""
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size > METRICS_MAX_BYTES:
        return (
            f"metrics.json is {size:,} bytes, more than the limit of {METRICS_MAX_BYTES:,}; "
            'write only the numbers, e.g. {"test_accuracy": 0.987}'
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return f"metrics.json is not valid JSON ({error})"
    if _nesting(text) > METRICS_MAX_DEPTH:
        return (
            f"metrics.json nests objects or arrays more than {METRICS_MAX_DEPTH} levels deep; "
            'write a flat object, e.g. {"test_accuracy": 0.987}'
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        return f"metrics.json is not valid JSON ({error})"
    value = data.get("test_accuracy") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return f'metrics.json has no numeric "test_accuracy" (got {value!r})'
    if not 0 <= value <= 1:
        return f'metrics.json "test_accuracy" is {value}; write it as a fraction, e.g. 0.987'
    return ReportedAccuracy(float(value), "metrics.json", f'"test_accuracy": {value}')


def _nesting(text: str) -> int:
    """The deepest nesting of brackets and braces outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def from_log(log: str) -> ReportedAccuracy | None:
    """The last evaluation accuracy in a training log, else the last accuracy at all."""
    found: list[tuple[bool, ReportedAccuracy]] = []
    for number, line in enumerate(log.splitlines(), start=1):
        accuracy = _parse_line(line, number)
        if accuracy is not None:
            evaluation = bool(_EVALUATION.search(line)) or not _TRAINING.search(line)
            found.append((evaluation, accuracy))
    if not found:
        return None
    evaluations = [accuracy for evaluation, accuracy in found if evaluation]
    return (evaluations or [accuracy for _, accuracy in found])[-1]


def _parse_line(line: str, number: int) -> ReportedAccuracy | None:
    source = f"training log line {number}"
    text = line.strip()[:200]
    count = _COUNT.search(line)
    if count:
        correct, total = int(count.group(1)), int(count.group(2))
        if total > 0 and correct <= total:
            return ReportedAccuracy(correct / total, source, text)
    keyword = _KEYWORD.search(line)
    if not keyword:
        return None
    numbers = [
        (float(m.group(1)), bool(m.group(2)), "." in m.group(1))
        for m in _NUMBER.finditer(line, keyword.end())
    ]
    # Prefer a percentage, then a fraction, then a bare number that can be a percentage.
    for value, percent, _ in numbers:
        if percent and value <= 100:
            return ReportedAccuracy(value / 100, source, text)
    for value, _, decimal in numbers:
        if decimal and value <= 1:
            return ReportedAccuracy(value, source, text)
    for value, _, _ in numbers:
        if 1 < value <= 100:
            return ReportedAccuracy(value / 100, source, text)
    return None


_LOSS = re.compile(r"\bloss\b[^0-9\n]{0,20}?(\d+(?:\.\d+)?(?:e-?\d+)?)", re.IGNORECASE)


def training_curve(log: str) -> dict[str, list[float]]:
    """The training losses and the evaluation accuracies a log prints, in order."""
    losses: list[float] = []
    accuracies: list[float] = []
    for number, line in enumerate(log.splitlines(), start=1):
        if _EVALUATION.search(line):
            accuracy = _parse_line(line, number)
            if accuracy is not None:
                accuracies.append(accuracy.value)
        elif _TRAINING.search(line):
            loss = _LOSS.search(line)
            if loss:
                losses.append(float(loss.group(1)))
    return {"loss": losses, "accuracy": accuracies}

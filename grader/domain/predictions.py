"""Reading the digit out of a TorchServe prediction body, whatever form the handler gives it.

Handlers answer with a bare integer (`7`), a list (`[7]`), a dict of class to probability
(`{"7": 0.98, "1": 0.01}`), a list of such dicts, or a dict naming the class
(`{"prediction": 7}`). Anything else is an error that quotes the body.
"""

from __future__ import annotations

import json
from typing import Any

NAMED_KEYS = ("prediction", "predicted", "label", "class", "digit", "result")


class PredictionFormatError(ValueError):
    def __init__(self, body: bytes | str, reason: str) -> None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        quoted = text.strip()[:200] + ("..." if len(text.strip()) > 200 else "")
        super().__init__(f"cannot read a digit from the prediction body {quoted!r}: {reason}")
        self.body = text


def parse_prediction(body: bytes | str) -> int:
    try:
        value = json.loads(body)
        digit = _digit(value)
    except (ValueError, UnicodeDecodeError):
        raise PredictionFormatError(body, "it is not JSON") from None
    except RecursionError:  # e.g. [[[[...]]]] thousands deep
        raise PredictionFormatError(body, "it is JSON nested too deeply to be a digit") from None
    if digit is None:
        raise PredictionFormatError(
            body, "expected a digit, [digit], {class: probability} or a list of those"
        )
    return digit


def _digit(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 9 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and 0 <= value <= 9 else None
    if isinstance(value, str):
        text = value.strip()
        return int(text) if len(text) == 1 and text.isdigit() else None
    if isinstance(value, list):
        return _digit(value[0]) if len(value) == 1 else None
    if isinstance(value, dict) and value:
        for key in NAMED_KEYS:
            if key in value:
                return _digit(value[key])
        return _most_probable(value)
    return None


def _most_probable(scores: dict[str, Any]) -> int | None:
    digits: dict[int, float] = {}
    for key, score in scores.items():
        digit = _digit(key)
        if digit is None or isinstance(score, bool) or not isinstance(score, int | float):
            return None
        digits[digit] = float(score)
    return max(digits, key=digits.__getitem__)

"""The grading options, declared once.

`grader grade` and `grader check` (argparse, grader/cli/main.py) and the pytest plugin
(`pytest --submissions ...`) add their options from this table, so that a default, a type or a
help text is written in one place. The command line forwards the values to the plugin under the
same names.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


def whole_number(text: str) -> int:
    """A whole number of at least 0, as an option's type (the seed)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 0")
    return int(text)


@dataclass(frozen=True)
class Option:
    """One option: its flag, help text, default and how its value is read."""

    flag: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    action: str | None = None  # "store_true" or "append"; None: one value
    metavar: str | None = None
    # pytest's --help shows `--flag=PLACEHOLDER`; where its placeholder differs from argparse's
    pytest_metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def keywords(self, metavar: str | None) -> dict[str, Any]:
        """The keyword arguments of `add_argument` (argparse) or `addoption` (pytest)."""
        keywords: dict[str, Any] = {"help": self.help}
        if self.action == "store_true":
            return {"action": "store_true", **keywords}
        if self.action is not None:
            keywords["action"] = self.action
        keywords["default"] = self.default
        if self.type is not None:
            keywords["type"] = self.type
        if metavar is not None:
            keywords["metavar"] = metavar
        return keywords


OPTIONS = {
    option.flag: option
    for option in (
        Option(
            "--submissions",
            "a submission folder, or a folder of submissions (repeatable); turns grading on",
            default=[],
            action="append",
            metavar="PATH",
        ),
        Option("--profile", "rubric profile (default: offline)", default="offline"),
        Option("--rubric", "rubric TOML (default: the bundled one)", pytest_metavar="FILE"),
        Option("--report-dir", "default: reports", default="reports", pytest_metavar="DIR"),
        Option(
            "--force",
            "grade again even submissions whose stored results are still valid",
            action="store_true",
        ),
        Option(
            "--keep-images",
            "keep each submission's images after grading (default: remove them)",
            action="store_true",
        ),
        Option(
            "--image-sources-json",
            "where base images come from, as `grader grade` resolved it (config and options)",
        ),
        Option(
            "--image-cache-gb",
            "with --keep-images: remove images kept by earlier runs, oldest first, while all "
            "kept images take more than GB (default 20)",
            default=20.0,
            type=float,
            metavar="GB",
        ),
        Option("--gpus", "auto, none, all, or GPU ids like 0,1", default="auto"),
        Option(
            "--seed",
            "draws the hidden digits and their augmentation; the same seed sends the same "
            "digits again (default: a new secret one, kept in results.json)",
            type=whole_number,
            metavar="N",
        ),
        Option(
            "--hidden-dir",
            "the course's own hidden digits: one *-images-idx3-ubyte and one "
            "*-labels-idx1-ubyte file (MNIST IDX, plain or .gz)",
            type=Path,
            metavar="DIR",
        ),
    )
}


class _ArgumentAdder(Protocol):
    def add_argument(self, *flags: str, **keywords: Any) -> Any: ...


class _OptionAdder(Protocol):
    def addoption(self, *flags: str, **keywords: Any) -> None: ...


def add_argument(parser: _ArgumentAdder, flag: str) -> None:
    """Add the option `flag` to an argparse parser or group."""
    option = OPTIONS[flag]
    parser.add_argument(flag, **option.keywords(option.metavar))


def add_pytest_options(group: _OptionAdder) -> None:
    """Add every option of the table to the plugin's group of pytest options."""
    for option in OPTIONS.values():
        group.addoption(option.flag, **option.keywords(option.pytest_metavar or option.metavar))

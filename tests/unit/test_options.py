"""The grading options a TA gives `grader grade` and those the pytest plugin takes are the same
options: same names, defaults and help, so a run started either way grades alike."""

from __future__ import annotations

import re

import pytest

from grader.cli.main import _parser

# What a TA gets without giving the option, on the command line and through pytest alike.
DEFAULTS = {
    "profile": "offline",
    "rubric": None,
    "report_dir": "reports",
    "gpus": "auto",
    "seed": None,
    "hidden_dir": None,
    "force": False,
    "keep_images": False,
    "image_cache_gb": 20.0,
}

HELP = {
    "--seed": "draws the hidden digits and their augmentation; the same seed sends the same "
    "digits again (default: a new secret one, kept in results.json)",
    "--force": "grade again even submissions whose stored results are still valid",
    "--gpus": "auto, none, all, or GPU ids like 0,1",
    "--image-cache-gb": "with --keep-images: remove images kept by earlier runs, oldest first, "
    "while all kept images take more than GB (default 20)",
}


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_command_line_and_the_plugin_have_the_same_defaults(pytester):
    given = vars(_parser().parse_args(["grade"]))
    config = pytester.parseconfig()
    for name, default in DEFAULTS.items():
        assert given[name] == default, name
        assert config.getoption(name) == default, name


def test_the_command_line_and_the_plugin_explain_an_option_in_the_same_words(pytester, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["grade", "--help"])
    command_line = _words(capsys.readouterr().out)
    plugin = _words("\n".join(pytester.runpytest("--help").outlines))
    for flag, text in HELP.items():
        assert flag in command_line and text in command_line, flag
        assert flag in plugin and text in plugin, flag


def test_the_plugin_refuses_a_negative_seed_with_the_reason(pytester):
    pytester.mkdir("sub").joinpath("train").mkdir()
    result = pytester.runpytest("--submissions", "sub", "--seed", "-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--seed*'-3': give a whole number of at least 0*"])

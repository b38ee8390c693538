"""Configuration schemas: every problem is one line with the file, the dotted key and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from grader.domain.config import Invalid, Schema, load_toml
from grader.domain.errors import ConfigError
from grader.domain.settings import Settings


class Entry(Schema, frozen=True):
    points: Annotated[float, msgspec.Meta(ge=0)]
    title: str = "untitled"


class Limits(Schema, frozen=True):
    cpus: Annotated[float, msgspec.Meta(gt=0)]
    pids: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 256
    label: Annotated[int, msgspec.Meta(ge=0, le=9, description="a digit 0-9")] | None = None

    def __post_init__(self) -> None:
        if self.pids < self.cpus:
            raise Invalid("pids", f"must be at least cpus ({self.cpus:g}), got {self.pids}")


@dataclass(frozen=True)
class Window:
    """A table read into a dataclass: msgspec itself lets unknown keys through these."""

    width: Annotated[int, msgspec.Meta(ge=1)]
    height: int = 10

    def __post_init__(self) -> None:
        if self.height > self.width:
            raise Invalid("height", f"must be at most width ({self.width}), got {self.height}")


class Example(Schema, frozen=True):
    entries: dict[str, Entry]
    limits: Limits
    tags: tuple[str, ...] = ()
    strict: bool = False
    windows: dict[str, Window] = msgspec.field(default_factory=dict)


GOOD = '[entries."a.b"]\npoints = 1\n[entries.c]\npoints = 2\n[limits]\ncpus = 1\n'


def load(tmp_path: Path, text: str) -> Example:
    path = tmp_path / "example.toml"
    path.write_text(text)
    return load_toml(path, Example, ConfigError)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    message = str(raised.value)
    assert "\n" not in message
    prefix = f"{tmp_path / 'example.toml'}: "
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def test_defaults_are_applied(tmp_path):
    example = load(tmp_path, GOOD)
    assert example.entries["a.b"] == Entry(points=1.0, title="untitled")
    assert example.limits.pids == 256 and example.limits.label is None
    assert example.tags == () and example.strict is False and example.windows == {}
    windows = load(tmp_path, GOOD + "[windows.w]\nwidth = 20\n").windows
    assert windows == {"w": Window(width=20, height=10)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys, at the top, in a table, in an entry named with a dot
        (
            "extra = 1\n" + GOOD,
            "extra: unknown key; allowed here: entries, limits, strict, tags, windows",
        ),
        (
            GOOD + "[windows.w]\nwidth = 20\ndepth = 3\n",
            "windows.w.depth: unknown key; allowed here: height, width",
        ),
        (GOOD + "[windows.w]\nheight = 3\n", "windows.w.width: missing; set it to a whole "
         "number at least 1"),
        (
            GOOD + "[windows.w]\nwidth = 2\nheight = 3\n",
            "windows.w.height: must be at most width (2), got 3",
        ),
        (GOOD + "[windows]\nw = 2\n", "windows.w: must be a table, got 2"),
        (GOOD + "swap = 1\n", "limits.swap: unknown key; allowed here: cpus, label, pids"),
        (
            GOOD.replace("points = 1\n", "points = 1\npoint = 2\n"),
            'entries."a.b".point: unknown key; allowed here: points, title',
        ),
        # wrong types
        (GOOD + "pids = 1.5\n", "limits.pids: must be a whole number from 16 to 4096, got 1.5"),
        (GOOD + "pids = true\n", "limits.pids: must be a whole number from 16 to 4096, got true"),
        (
            GOOD.replace("points = 2", 'points = "2"'),
            "entries.c.points: must be a number at least 0, got '2'",
        ),
        ('tags = "x"\n' + GOOD, "tags: must be a list of strings, got 'x'"),
        ("tags = [1]\n" + GOOD, "tags[0]: must be a string, got 1"),
        ("strict = 1\n" + GOOD, "strict: must be true or false, got 1"),
        ('entries = "none"\n[limits]\ncpus = 1\n', "entries: must be a table, got 'none'"),
        ("[entries]\nc = 3\n[limits]\ncpus = 1\n", "entries.c: must be a table, got 3"),
        # values out of range
        (GOOD.replace("cpus = 1", "cpus = 0"), "limits.cpus: must be a number above 0, got 0"),
        (GOOD + "label = 12\n", "limits.label: must be a digit 0-9, got 12"),
        (GOOD + "pids = 16\ncpus = 20\n", None),  # a duplicate key: TOML itself refuses it
        (
            GOOD.replace("cpus = 1", "cpus = 20\npids = 16"),
            "limits.pids: must be at least cpus (20), got 16",
        ),
        # missing keys
        (GOOD.replace("points = 2", 'title = "C"'), "entries.c.points: missing; set it to a "
         "number at least 0"),
        ('[entries.c]\npoints = 2\n', "limits: missing; set it to a table"),
        (GOOD.replace("cpus = 1", ""), "limits.cpus: missing; set it to a number above 0"),
    ],
)  # fmt: skip
def test_one_line_with_the_dotted_key(tmp_path, text, message):
    found = error_of(tmp_path, text)
    if message is None:
        assert found.startswith("not valid TOML (")
    else:
        assert found == message


def test_the_first_failing_entry_of_a_table_is_named(tmp_path):
    text = GOOD.replace("points = 1", "points = -1").replace("points = 2", "points = -2")
    assert error_of(tmp_path, text) == 'entries."a.b".points: must be a number at least 0, got -1'


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_toml(tmp_path / "nothing.toml", Example, ConfigError, what="example file")
    assert str(raised.value) == f"{tmp_path / 'nothing.toml'}: no such example file"
    (tmp_path / "example.toml").write_bytes(b"title = '\xff'\n")
    with pytest.raises(ConfigError, match=r"example.toml: not valid TOML .*save it as UTF-8$"):
        load_toml(tmp_path / "example.toml", Example, ConfigError)


def test_settings_from_the_environment(tmp_path):
    settings = Settings.from_env({"GRADER_HOME": str(tmp_path), "GRADER_PULL_TIMEOUT": "12.5"})
    assert settings == Settings(home=tmp_path.resolve(), docker_host=None, pull_timeout_s=12.5)
    unset = Settings.from_env({"GRADER_PULL_TIMEOUT": ""})
    assert unset.pull_timeout_s == 300  # the documented default (README: GRADER_PULL_TIMEOUT)


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_environment_variable_is_one_line(value):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"GRADER_PULL_TIMEOUT": value})
    assert str(raised.value) == (
        f"environment: GRADER_PULL_TIMEOUT: must be a number above 0, got '{value}'"
    )

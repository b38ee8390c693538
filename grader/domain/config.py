"""Configuration files read into typed objects, checked against one schema per file.

A schema is a tree of frozen `Schema` structs (msgspec), or of frozen dataclasses where other
modules `replace` the objects, whose fields hold the types, bounds (`msgspec.Meta`) and defaults;
unknown keys are refused. `load_toml` reads a file into its schema; any problem becomes one line
naming the file and the dotted key, what is wrong and what is expected, raised as the caller's
`GraderError` subclass.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

from grader.domain.errors import GraderError

T = TypeVar("T")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# msgspec's error: "<problem> - at `$.a.b[0][...].c`", where `[...]` is some key of a table.
_LOCATED = re.compile(r"(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]*)`")


class Schema(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A table of a configuration file: its keys, their types and defaults.

    Subclasses say `frozen=True` again: type checkers do not see it inherited.
    """


class Invalid(ValueError):
    """A schema's `__post_init__` refuses the value of one of its keys (or of a key below one:
    a tuple of keys)."""

    def __init__(self, key: str | tuple[str, ...], problem: str) -> None:
        self.keys = (key,) if isinstance(key, str) else key
        self.problem = problem
        super().__init__(f"{dotted(self.keys)}: {problem}")


def read_toml(path: Path, error: type[GraderError], *, what: str = "file") -> dict[str, Any]:
    """The parsed TOML of `path`; a missing or unreadable file is one line naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: a folder, not a {what}") from None
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not valid TOML ({problem}); save it as UTF-8") from None
    except OSError as problem:
        raise error(f"{path}: cannot be read ({problem.strerror or problem})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: not valid TOML ({problem})") from None
    except RecursionError:
        raise error(
            f"{path}: nested too deeply to read; a {what} holds a few plain tables"
        ) from None


def load_toml(path: Path, schema: type[T], error: type[GraderError], *, what: str = "file") -> T:
    """`path` read into `schema`."""
    return convert(read_toml(path, error, what=what), schema, source=path, error=error)


def convert(
    data: Any,
    schema: type[T],
    *,
    source: Path | str,
    error: type[GraderError],
    prefix: tuple[str, ...] = (),
    strict: bool = True,
) -> T:
    """`data` (parsed TOML, or the table at the dotted key `prefix`) checked into `schema`.

    `strict=False` also takes numbers and booleans written as strings (environment variables).
    """
    found = _unknown_key(data, schema)
    if found is None:
        try:
            return msgspec.convert(data, schema, strict=strict)
        except msgspec.ValidationError as failure:
            found = _explain(failure, data, schema, strict)
    keys, problem = found
    key = dotted((*prefix, *keys))
    raise error(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def dotted(keys: tuple[str, ...] | list[str]) -> str:
    """Keys as TOML writes them: `checks."serve.ping".points`, `images.sources[1]`."""
    text = ""
    for key in keys:
        if key.startswith("["):
            text += key
        else:
            part = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
            text += f".{part}" if text else part
    return text


def _explain(
    failure: msgspec.ValidationError, data: Any, schema: Any, strict: bool
) -> tuple[list[str], str]:
    """The keys leading to what `failure` is about, and the problem in words."""
    located = _LOCATED.fullmatch(str(failure))
    assert located is not None  # the pattern matches any text
    problem, path = located["problem"], located["path"] or ""
    keys: list[str] = []
    value, kind = data, schema
    for step in _STEP.finditer(path):
        name, index = step.groups()
        if index == "...":
            # msgspec does not say which entry of a table failed: the first that fails alone.
            table, entry_kind = value, _child(kind, "")
            for entry_key, entry in table.items():
                try:
                    msgspec.convert(entry, entry_kind, strict=strict)
                except msgspec.ValidationError as inner:
                    inner_keys, inner_problem = _explain(inner, entry, entry_kind, strict)
                    return [*keys, entry_key, *inner_keys], inner_problem
            break
        if index is not None:
            keys.append(f"[{index}]")
            value, kind = value[int(index)], _child(kind, "")
        else:
            keys.append(name)
            value, kind = (
                value.get(name) if isinstance(value, Mapping) else None,
                _child(kind, name),
            )
    cause = failure.__cause__
    if isinstance(cause, Invalid):
        return [*keys, *cause.keys], cause.problem
    if isinstance(cause, ValueError | TypeError):
        return keys, str(cause)
    if unknown := _UNKNOWN.fullmatch(problem):
        allowed = ", ".join(sorted(_fields(_bare(kind)) or ()))
        return [*keys, unknown["name"]], f"unknown key; allowed here: {allowed}"
    if missing := _MISSING.fullmatch(problem):
        field = _child(kind, missing["name"])
        return [*keys, missing["name"]], f"missing; set it to {describe(field)}"
    return keys, f"must be {describe(kind)}, got {_shown(value)}"


def _unknown_key(data: Any, kind: Any) -> tuple[list[str], str] | None:
    """The first key, in the file's order, that no table of `kind` has. msgspec finds these
    itself in structs but not in dataclasses, which schemas use for the objects other modules
    `replace` and `asdict`."""
    if kind is Any:
        return None
    fields = _fields(_bare(kind))
    if fields is not None:
        if not isinstance(data, Mapping):
            return None
        for key, value in data.items():
            if key not in fields:
                return [key], f"unknown key; allowed here: {', '.join(sorted(fields))}"
            if found := _unknown_key(value, fields[key]):
                return [key, *found[0]], found[1]
        return None
    entry_kind = _child(kind, "")
    entries = (
        data.items()
        if isinstance(data, Mapping)
        else ((f"[{index}]", item) for index, item in enumerate(data))
        if isinstance(data, list)
        else ()
    )
    for key, value in entries:
        if found := _unknown_key(value, entry_kind):
            return [key, *found[0]], found[1]
    return None


def _fields(kind: Any) -> dict[str, Any] | None:
    """The keys of a struct or dataclass and their types; None for any other type."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return {field.encode_name: field.type for field in msgspec.structs.fields(kind)}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = get_type_hints(kind, include_extras=True)
        return {field.name: hints[field.name] for field in dataclasses.fields(kind) if field.init}
    return None


def _bare(kind: Any) -> Any:
    """`kind` without `Annotated` and without `| None`."""
    while True:
        origin = get_origin(kind)
        if origin is Annotated:
            kind = get_args(kind)[0]
        elif origin in (Union, types.UnionType):
            others = [arg for arg in get_args(kind) if arg is not type(None)]
            if len(others) != 1:
                return kind
            kind = others[0]
        else:
            return kind


def _child(kind: Any, name: str) -> Any:
    """The type of key `name` of a struct, or of any entry of a table or list."""
    kind = _bare(kind)
    fields = _fields(kind)
    if fields is not None:
        return fields.get(name, Any)
    args = get_args(kind)
    if get_origin(kind) in (dict, Mapping):
        return args[1]
    return args[0] if args else Any


def describe(kind: Any) -> str:
    """What a value of `kind` is, in words: "a number at least 1", "a list of strings"."""
    info = msgspec.inspect.type_info(kind)
    return _words(info)


def _words(info: msgspec.inspect.Type) -> str:
    if isinstance(info, msgspec.inspect.Metadata):
        description = (info.extra_json_schema or {}).get("description")
        return str(description) if description else _words(info.type)
    if isinstance(info, msgspec.inspect.UnionType):
        return " or ".join(
            _words(option)
            for option in info.types
            if not isinstance(option, msgspec.inspect.NoneType)
        )
    if isinstance(info, msgspec.inspect.BoolType):
        return "true or false"
    if isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        noun = "a whole number" if isinstance(info, msgspec.inspect.IntType) else "a number"
        return noun + _bounds(info.ge, info.gt, info.le, info.lt)
    if isinstance(info, msgspec.inspect.StrType):
        return "a non-empty string" if info.min_length else "a string"
    if isinstance(info, msgspec.inspect.LiteralType):
        return "one of " + ", ".join(
            f'"{v}"' if isinstance(v, str) else str(v) for v in info.values
        )
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        item = _words(info.item_type)
        plural = {
            "a string": "strings",
            "a non-empty string": "non-empty strings",
            "a number": "numbers",
            "a whole number": "whole numbers",
            "a table": "tables",
        }
        return f"a list of {plural[item]}" if item in plural else f"a list, each item {item}"
    if isinstance(
        info, msgspec.inspect.StructType | msgspec.inspect.DataclassType | msgspec.inspect.DictType
    ):
        return "a table"
    return "a valid value"


def _bounds(ge: float | None, gt: float | None, le: float | None, lt: float | None) -> str:
    if ge is not None and le is not None:
        return f" from {ge:g} to {le:g}"
    low = f"at least {ge:g}" if ge is not None else f"above {gt:g}" if gt is not None else ""
    high = f"at most {le:g}" if le is not None else f"below {lt:g}" if lt is not None else ""
    parts = [part for part in (low, high) if part]
    return " " + " and ".join(parts) if parts else ""


def _shown(value: Any) -> str:
    """A value as the file wrote it, kept short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

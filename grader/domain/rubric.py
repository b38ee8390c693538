"""The rubric: checks and their points, and per profile the accuracy targets and resource limits.

The rubric is data (TOML) loaded into frozen objects and validated once at start-up; an invalid
file stops the run with one line naming the file and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from grader.domain.checks import CHECKS, Check, check_by_id, check_ids
from grader.domain.errors import RubricError

DEFAULT_RUBRIC = Path(__file__).with_name("rubric.toml")

DATASETS = ("offline", "full")
BUILD_NETWORKS = ("isolated", "none")  # grader/engine/buildnet.py knows what each means


@dataclass(frozen=True)
class CheckSpec:
    """A check of grader/domain/checks.py with the points this rubric gives it."""

    id: str
    points: float
    title: str


@dataclass(frozen=True)
class Targets:
    reported_accuracy: float
    heldout_accuracy: float
    integrity_gap: float


@dataclass(frozen=True)
class Limits:
    build_seconds: float
    train_seconds: float
    cpus: float
    memory_mb: int
    pids: int
    server_ready_seconds: float
    predict_concurrency: int
    build_context_mb: float = 500.0  # a larger build context is refused before it is sent
    submission_seconds: float = 3600.0  # all of one submission's checks together
    predict_timeout_seconds: float = 30.0  # one prediction request
    check_seconds: float = 1200.0  # one check, enforced even while it is blocked
    model_mb: float = 500.0  # the largest model file copied out of training
    output_mb: float = 1024.0  # what training may write to $OUTPUT_DIR
    writable_mb: float = 2048.0  # what training may write into its container's own file system
    heldout_digits: int = 1000  # hidden digits drawn from the pool for each run


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: str
    targets: Targets
    limits: Limits
    # What image builds reach: "isolated" (the internet, not the grading host), "none" (nothing).
    build_network: str = "isolated"


@dataclass(frozen=True)
class Rubric:
    path: Path
    checks: Mapping[str, CheckSpec]
    profiles: Mapping[str, Profile]
    # True: an integrity flag withholds the points of the checks it concerns until a TA clears
    # it; False (default): points are kept and the flag is for the TA to decide on.
    integrity_penalty: bool = False

    @property
    def max_score(self) -> float:
        return sum(check.points for check in self.checks.values())

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise RubricError(
                f"{self.path}: no profile {name!r}; it defines {', '.join(self.profiles)}"
            ) from None


def load_rubric(path: Path = DEFAULT_RUBRIC) -> Rubric:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RubricError(f"{path}: no such rubric file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RubricError(f"{path}: not valid TOML ({error})") from None
    reader = _Reader(path)
    reader.only_keys(data, "", {"checks", "profiles", "integrity_penalty"})
    penalty = data.get("integrity_penalty", False)
    if not isinstance(penalty, bool):
        reader.fail(
            "integrity_penalty",
            f"must be true (withhold the points of flagged checks) or false (keep them), "
            f"got {penalty!r}",
        )
    given = reader.table(data.get("checks", {}), "checks")
    for check_id in given:
        if check_by_id(check_id) is None:
            reader.fail(
                f"checks.{check_id}", f"unknown check id; known ones are {', '.join(check_ids())}"
            )
    # Every check of the harness, in its order; one the rubric leaves out keeps its default.
    checks = {check.id: _check(reader, check, given.get(check.id, {})) for check in CHECKS}
    raw_profiles = reader.child_table(data, "", "profiles")
    profiles = {
        name: _profile(reader, name, _effective(reader, raw_profiles, name, ()))
        for name in raw_profiles
    }
    if not profiles:
        raise RubricError(f"{path}: profiles: at least one profile is needed")
    return Rubric(path, MappingProxyType(checks), MappingProxyType(profiles), penalty)


def _check(reader: _Reader, check: Check, spec: Any) -> CheckSpec:
    key = f"checks.{check.id}"
    spec = reader.table(spec, key)
    reader.only_keys(spec, key, {"points"})
    return CheckSpec(
        id=check.id,
        points=reader.number(spec, key, "points", minimum=0, default=float(check.points)),
        title=check.title,
    )


def _effective(
    reader: _Reader, profiles: dict[str, Any], name: str, chain: tuple[str, ...]
) -> dict[str, Any]:
    """A profile's table with what it `extends` filled in (its own values win, table by table)."""
    key = f"profiles.{name}"
    spec = reader.table(profiles[name], key)
    parent = spec.get("extends")
    if parent is None:
        return spec
    if not isinstance(parent, str) or parent not in profiles:
        reader.fail(
            f"{key}.extends", f"no profile {parent!r} to extend; defined: {', '.join(profiles)}"
        )
    if parent in chain or parent == name:
        cycle = " -> ".join((*chain, name, parent))
        reader.fail(f"{key}.extends", f"profiles extend each other in a cycle ({cycle})")
    merged = dict(_effective(reader, profiles, parent, (*chain, name)))
    for field_name, value in spec.items():
        if field_name == "extends":
            continue
        inherited = merged.get(field_name)
        if isinstance(value, dict) and isinstance(inherited, dict):
            merged[field_name] = {**inherited, **value}
        else:
            merged[field_name] = value
    return merged


def _profile(reader: _Reader, name: str, spec: Any) -> Profile:
    key = f"profiles.{name}"
    spec = reader.table(spec, key)
    reader.only_keys(
        spec, key, {"description", "dataset", "targets", "limits", "extends", "build_network"}
    )
    build_network = reader.string(spec, key, "build_network", default="isolated")
    if build_network not in BUILD_NETWORKS:
        reader.fail(
            f"{key}.build_network",
            f'must be "isolated" (builds reach the internet but not this host) or "none" '
            f"(builds have no network), got {build_network!r}",
        )
    dataset = reader.string(spec, key, "dataset")
    if dataset not in DATASETS:
        reader.fail(f"{key}.dataset", f"must be one of {', '.join(DATASETS)}, got {dataset!r}")
    targets = reader.child_table(spec, key, "targets")
    target_key = f"{key}.targets"
    reader.only_keys(targets, target_key, set(Targets.__dataclass_fields__))
    limits = reader.child_table(spec, key, "limits")
    limit_key = f"{key}.limits"
    reader.only_keys(limits, limit_key, set(Limits.__dataclass_fields__))
    return Profile(
        name=name,
        description=reader.string(spec, key, "description", default=name),
        dataset=dataset,
        build_network=build_network,
        targets=Targets(
            **{
                name: reader.number(targets, target_key, name, minimum=0, maximum=1)
                for name in Targets.__dataclass_fields__
            }
        ),
        limits=Limits(
            build_seconds=reader.number(limits, limit_key, "build_seconds", minimum=1),
            train_seconds=reader.number(limits, limit_key, "train_seconds", minimum=1),
            cpus=reader.number(limits, limit_key, "cpus", minimum=0.1),
            memory_mb=int(reader.number(limits, limit_key, "memory_mb", minimum=64)),
            pids=int(reader.number(limits, limit_key, "pids", minimum=16)),
            server_ready_seconds=reader.number(
                limits, limit_key, "server_ready_seconds", minimum=1
            ),
            predict_concurrency=int(
                reader.number(limits, limit_key, "predict_concurrency", minimum=1, maximum=64)
            ),
            build_context_mb=reader.number(
                limits, limit_key, "build_context_mb", minimum=1, default=500.0
            ),
            submission_seconds=reader.number(
                limits, limit_key, "submission_seconds", minimum=1, default=3600.0
            ),
            predict_timeout_seconds=reader.number(
                limits, limit_key, "predict_timeout_seconds", minimum=0.1, default=30.0
            ),
            check_seconds=_check_seconds(reader, limits, limit_key),
            model_mb=reader.number(limits, limit_key, "model_mb", minimum=1, default=500.0),
            output_mb=reader.number(limits, limit_key, "output_mb", minimum=1, default=1024.0),
            writable_mb=reader.number(limits, limit_key, "writable_mb", minimum=1, default=2048.0),
            heldout_digits=int(
                reader.number(limits, limit_key, "heldout_digits", minimum=10, default=1000)
            ),
        ),
    )


STAGE_LIMITS = ("build_seconds", "train_seconds", "server_ready_seconds")
CHECK_SECONDS_MARGIN = 300.0  # the default check_seconds: the longest stage and this


def _check_seconds(reader: _Reader, limits: Mapping[str, Any], limit_key: str) -> float:
    """One check's limit: at least every stage's own limit, so that a stage that runs out of
    time fails with its own reason; by default the longest stage's limit plus a margin."""
    stages = {name: reader.number(limits, limit_key, name, minimum=1) for name in STAGE_LIMITS}
    longest = max(stages, key=stages.__getitem__)
    value = reader.number(
        limits, limit_key, "check_seconds", minimum=1,
        default=stages[longest] + CHECK_SECONDS_MARGIN,
    )  # fmt: skip
    if value < stages[longest]:
        reader.fail(
            f"{limit_key}.check_seconds",
            f"must be at least {longest} ({stages[longest]:g}): a check may run a whole stage, "
            f"got {value:g}",
        )
    return value


class _Reader:
    """Typed access to parsed TOML that fails with `<file>: <dotted key>: <problem>`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> None:
        raise RubricError(f"{self.path}: {key}: {problem}")

    def _join(self, parent: str, key: str) -> str:
        return f"{parent}.{key}" if parent else key

    def only_keys(self, table: Mapping[str, Any], parent: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.fail(
                    self._join(parent, key), f"unknown key; allowed: {', '.join(sorted(allowed))}"
                )

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, got {value!r}")
        return value

    def child_table(self, data: Mapping[str, Any], parent: str, key: str) -> dict[str, Any]:
        full = self._join(parent, key)
        if key not in data:
            self.fail(full, "missing table")
        return self.table(data[key], full)

    def number(
        self,
        table: Mapping[str, Any],
        parent: str,
        key: str,
        minimum: float | None = None,
        maximum: float | None = None,
        default: float | None = None,
    ) -> float:
        full = self._join(parent, key)
        if key not in table:
            if default is not None:
                return default
            self.fail(full, "missing")
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(full, f"must be a number, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(full, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(full, f"must be at most {maximum}, got {value}")
        return float(value)

    def string(
        self, table: Mapping[str, Any], parent: str, key: str, default: str | None = None
    ) -> str:
        full = self._join(parent, key)
        value = table.get(key, default)
        if value is None:
            self.fail(full, "missing")
        if not isinstance(value, str):
            self.fail(full, f"must be a string, got {value!r}")
        return value


def effective_rubric(rubric: Rubric, profile: Profile) -> dict[str, Any]:
    """What grading with `profile` uses: every check's points, the targets and the limits."""
    return {
        "rubric": str(rubric.path),
        "profile": profile.name,
        "description": profile.description,
        "dataset": profile.dataset,
        "build_network": profile.build_network,
        "max_score": rubric.max_score,
        "integrity_penalty": rubric.integrity_penalty,
        "checks": {c.id: {"points": c.points, "title": c.title} for c in rubric.checks.values()},
        "targets": asdict(profile.targets),
        "limits": asdict(profile.limits),
    }


def format_rubric(rubric: Rubric, profile: Profile) -> str:
    data = effective_rubric(rubric, profile)
    width = max(len(check_id) for check_id in rubric.checks)
    lines = [
        f"rubric   {data['rubric']}",
        f"profile  {profile.name}: {profile.description} (dataset {profile.dataset}, "
        f"build network {profile.build_network})",
        "integrity flags "
        + (
            "withhold the points of the checks they concern"
            if rubric.integrity_penalty
            else "keep points (the TA decides)"
        ),
        "",
        f"checks ({rubric.max_score:g} points)",
    ]
    lines += [f"  {c.id:<{width}}  {c.points:>4g}  {c.title}" for c in rubric.checks.values()]
    for section in ("targets", "limits"):
        lines += ["", section]
        lines += [f"  {name:<{width}}  {value:g}" for name, value in data[section].items()]
    return "\n".join(lines)

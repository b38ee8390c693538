"""The rubric: checks and their points, and per profile the accuracy targets and resource limits.

The rubric is data (TOML) read into frozen objects through one schema and validated once at
start-up; an invalid file stops the run with one line naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

import msgspec

from grader.domain.checks import CHECKS, check_by_id, check_ids
from grader.domain.config import Invalid, Schema, convert, read_toml
from grader.domain.errors import RubricError

DEFAULT_RUBRIC = Path(__file__).with_name("rubric.toml")

Dataset = Literal["offline", "full"]
DATASETS: tuple[Dataset, ...] = get_args(Dataset)
# What image builds reach; grader/engine/buildnet.py knows what each means.
BuildNetwork = Annotated[
    Literal["isolated", "none"],
    msgspec.Meta(
        description='"isolated" (builds reach the internet but not this host) or "none" '
        "(builds have no network)"
    ),
]
BUILD_NETWORKS: tuple[str, ...] = get_args(get_args(BuildNetwork)[0])
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
Points = Annotated[float, msgspec.Meta(ge=0)]
AtLeast1 = Annotated[float, msgspec.Meta(ge=1)]
STAGE_LIMITS = ("build_seconds", "train_seconds", "server_ready_seconds")
CHECK_SECONDS_MARGIN = 300.0  # the default check_seconds: the longest stage and this
FROM_STAGES = 0.0  # check_seconds not given: the longest stage's limit and the margin


@dataclass(frozen=True)
class CheckSpec:
    """A check of grader/domain/checks.py with the points this rubric gives it."""

    id: str
    points: float
    title: str


@dataclass(frozen=True)
class Targets:
    reported_accuracy: Fraction
    heldout_accuracy: Fraction
    integrity_gap: Fraction


@dataclass(frozen=True)
class Limits:
    build_seconds: AtLeast1
    train_seconds: AtLeast1
    cpus: Annotated[float, msgspec.Meta(ge=0.1)]
    memory_mb: Annotated[int, msgspec.Meta(ge=64)]
    pids: Annotated[int, msgspec.Meta(ge=16)]
    server_ready_seconds: AtLeast1
    predict_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)]
    build_context_mb: AtLeast1 = 500.0  # a larger build context is refused before it is sent
    submission_seconds: AtLeast1 = 3600.0  # all of one submission's checks together
    predict_timeout_seconds: Annotated[float, msgspec.Meta(ge=0.1)] = 30.0  # one request
    # One check, enforced even while it is blocked: at least every stage's own limit, so that a
    # stage that runs out of time fails with its own reason.
    check_seconds: AtLeast1 = FROM_STAGES
    model_mb: AtLeast1 = 500.0  # the largest model file copied out of training
    output_mb: AtLeast1 = 1024.0  # what training may write to $OUTPUT_DIR
    writable_mb: AtLeast1 = 2048.0  # what training may write into its container's own files
    heldout_digits: Annotated[int, msgspec.Meta(ge=10)] = 1000  # hidden digits for each run

    def __post_init__(self) -> None:
        longest = max(STAGE_LIMITS, key=lambda name: float(getattr(self, name)))
        stage_seconds = float(getattr(self, longest))
        if self.check_seconds == FROM_STAGES:
            object.__setattr__(self, "check_seconds", stage_seconds + CHECK_SECONDS_MARGIN)
        elif self.check_seconds < stage_seconds:
            raise Invalid(
                "check_seconds",
                f"must be at least {longest} ({stage_seconds:g}): a check may run a whole "
                f"stage, got {self.check_seconds:g}",
            )


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: Dataset
    targets: Targets
    limits: Limits
    build_network: str


@dataclass(frozen=True)
class Rubric:
    path: Path
    checks: Mapping[str, CheckSpec]
    profiles: Mapping[str, Profile]
    # True: an integrity flag withholds the points of the checks it concerns until a TA clears
    # it; False: points are kept and the flag is for the TA to decide on.
    integrity_penalty: bool

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


class CheckTable(Schema, frozen=True):
    points: Points | None = None  # None: the check's default (grader/domain/checks.py)


class ProfileTable(Schema, frozen=True):
    """A profile, once what it `extends` is filled in."""

    dataset: Dataset
    targets: Targets
    limits: Limits
    description: str | None = None  # None: the profile's name
    build_network: BuildNetwork = "isolated"
    extends: str | None = None


class RubricFile(Schema, frozen=True):
    # Each profile is read as a ProfileTable after what it extends is filled in.
    profiles: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    checks: dict[str, CheckTable] = msgspec.field(default_factory=dict)
    integrity_penalty: Annotated[
        bool,
        msgspec.Meta(
            description="true (withhold the points of flagged checks) or false (keep them)"
        ),
    ] = False

    def __post_init__(self) -> None:
        for check_id in self.checks:
            if check_by_id(check_id) is None:
                raise Invalid(
                    ("checks", check_id),
                    f"unknown check id; known ones are {', '.join(check_ids())}",
                )
        if not self.profiles:
            raise Invalid("profiles", "at least one profile is needed, e.g. [profiles.offline]")


def load_rubric(path: Path = DEFAULT_RUBRIC) -> Rubric:
    data = read_toml(path, RubricError, what="rubric file")
    rubric = convert(data, RubricFile, source=path, error=RubricError)
    # Every check of the harness, in its order; one the rubric leaves out keeps its default.
    checks = {}
    for check in CHECKS:
        given = rubric.checks.get(check.id, CheckTable()).points
        points = float(check.points) if given is None else given
        checks[check.id] = CheckSpec(id=check.id, points=points, title=check.title)
    profiles = {}
    for name in rubric.profiles:
        table = convert(
            _effective(path, rubric.profiles, name, ()),
            ProfileTable,
            source=path,
            error=RubricError,
            prefix=("profiles", name),
        )
        profiles[name] = Profile(
            name=name,
            description=name if table.description is None else table.description,
            dataset=table.dataset,
            targets=table.targets,
            limits=table.limits,
            build_network=table.build_network,
        )
    return Rubric(
        path, MappingProxyType(checks), MappingProxyType(profiles), rubric.integrity_penalty
    )


def _effective(
    path: Path, profiles: dict[str, dict[str, Any]], name: str, chain: tuple[str, ...]
) -> dict[str, Any]:
    """A profile's table with what it `extends` filled in (its own values win, table by table)."""
    key = f"profiles.{name}"
    spec = profiles[name]
    parent = spec.get("extends")
    if parent is None:
        return spec
    if not isinstance(parent, str) or parent not in profiles:
        raise RubricError(
            f"{path}: {key}.extends: no profile {parent!r} to extend; defined: "
            f"{', '.join(profiles)}"
        )
    if parent in chain or parent == name:
        cycle = " -> ".join((*chain, name, parent))
        raise RubricError(f"{path}: {key}.extends: profiles extend each other in a cycle ({cycle})")
    merged = dict(_effective(path, profiles, parent, (*chain, name)))
    for field_name, value in spec.items():
        if field_name == "extends":
            continue
        inherited = merged.get(field_name)
        if isinstance(value, dict) and isinstance(inherited, dict):
            merged[field_name] = {**inherited, **value}
        else:
            merged[field_name] = value
    return merged


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

"""Why a check failed, as data: a stable code and the facts behind the human message.

A code is `<check id>/<reason>` (`serve.ping/loopback-bind`, `train.run/timeout`). Hints, reports
and tests read the code and its facts, never the wording of the message, so a message can be
reworded freely. Every code the harness can give is declared here with the facts it carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Fact = str | int | float

# Code -> the facts a failure with it carries. The codes one check gives.
REASONS: dict[str, tuple[str, ...]] = {
    "env.alpine_run/step-failed": ("detail",),
    "env.alpine_interactive/step-failed": ("detail",),
    **{
        f"{half}.dockerfile/{name}": facts
        for half in ("train", "serve")
        for name, facts in {
            "missing": ("file",),
            "unreadable": ("file",),
            "not-cuda": ("base",),
        }.items()
    },
    **{
        f"{half}.build/{name}": facts
        for half in ("train", "serve")
        for name, facts in {
            "copy-missing": ("file",),  # a COPY/ADD source not in the build context
            "base-image": ("image",),  # a FROM image neither found, pulled nor stood in for
            "dockerfile": ("file",),  # the Dockerfile cannot be read
            "context-missing": ("folder",),
            "timeout": ("limit_s",),
            "failed": ("error",),  # any other builder error
        }.items()
    },
    "serve.build/no-model": ("model_path",),  # nothing to place at serve.model_path
    "serve.build/model-path": ("model_path",),  # serve.model_path cannot hold a model
    "serve.build/dockerfile-outside": ("file",),
    "train.run/cannot-start": ("error",),
    "train.run/stopped": ("why",),
    "train.run/timeout": ("limit_s",),
    "train.run/out-of-memory": ("limit_mb",),
    "train.run/exit-code": ("exit_code",),
    "train.reported_accuracy/not-reported": (),
    "train.reported_accuracy/below-target": ("accuracy", "target"),
    "train.model_artifact/not-copied": ("file",),  # written, but not copied out (link, size)
    "train.model_artifact/not-written": ("file",),
    "train.model_artifact/empty": ("file",),
    **{
        f"{check}/{name}": facts
        for check in ("serve.ping", "serve.model_ready")
        for name, facts in {
            "exited": ("exit_code",),  # the container stopped by itself
            "oom-killed": ("exit_code",),  # the container was killed for its memory
            "not-executable": ("error",),  # its command (or #! interpreter) does not exist
            "no-ports": (),
            "incomplete-answer": (),  # an answer that trickled or never ended
            "not-ready": ("seen", "limit_s"),  # the wait ran out with something else seen
        }.items()
    },
    "serve.ping/loopback-bind": ("address", "port"),
    "serve.ping/wrong-port": ("port", "ports"),
    "serve.ping/no-listener": ("port", "processes"),
    "serve.ping/no-answer": ("limit_s",),
    "serve.ping/look-inside-failed": ("limit_s",),
    "serve.ping/token-auth": ("status",),  # token required and no key_file.json to read
    "serve.model_ready/no-model-registered": ("model", "limit_s"),
    "serve.model_ready/wrong-model-name": ("model", "seen"),
    "serve.model_ready/workers-not-ready": ("model", "workers", "limit_s"),
    **{
        f"{check}/{name}": facts
        for check in ("serve.sample_prediction", "serve.heldout_accuracy")
        for name, facts in {
            "prediction-timeout": ("limit_s",),
            "request-failed": ("error",),  # no answer (refused, reset, ...)
            "http-status": ("status",),
            "unreadable-body": ("body",),
        }.items()
    },
    "serve.sample_prediction/no-sample-image": ("folder",),
    "serve.sample_prediction/sample-label-unknown": ("file",),
    "serve.sample_prediction/wrong-digit": ("file", "label", "predicted"),
    "serve.heldout_accuracy/every-prediction-failed": ("error",),
    "serve.heldout_accuracy/below-target": ("accuracy", "target"),
}
# Reasons any check can give, qualified with the check's id when recorded.
ANY_CHECK: dict[str, tuple[str, ...]] = {
    "submission-time": ("limit_s",),  # the submission's own time ran out
    "check-time": ("limit_s",),  # this check's time ran out
    "intake-refused": (),  # the hand-in could not be taken in
    "manifest-invalid": (),  # submission.toml or the layout is invalid
    "engine-refused": ("error",),  # the engine refused a request for what the submission holds
}


class UnknownReason(ValueError):
    """A code no part of the harness declares, or facts other than it declares: a harness bug."""


@dataclass(frozen=True)
class Reason:
    """Why a check failed: `code` with the facts it declares (numbers as numbers).

    A code raised where the check is not known (a base image, the submission's time) has no
    check id yet; `within(check_id)` adds it.
    """

    code: str
    facts: Mapping[str, Fact] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = declared_facts(self.code)
        if declared is None:
            raise UnknownReason(f"reason code {self.code!r} is not declared in REASONS")
        if set(self.facts) != set(declared):
            raise UnknownReason(
                f"reason {self.code!r} carries facts {sorted(self.facts)}, declared "
                f"{sorted(declared)}"
            )

    @property
    def check_id(self) -> str | None:
        return self.code.split("/", 1)[0] if "/" in self.code else None

    def within(self, check_id: str) -> Reason:
        """This reason as `check_id` gives it."""
        if "/" in self.code:
            return self
        return Reason(f"{check_id}/{self.code}", self.facts)


@dataclass(frozen=True)
class Failure:
    """A verdict against a submission: the message for the student, and why as data."""

    message: str
    reason: Reason


def reason(code: str, **facts: Fact) -> Reason:
    return Reason(code, dict(facts))


def declared_facts(code: str) -> tuple[str, ...] | None:
    """The facts `code` carries, or None when no part of the harness gives it. A code without a
    check id is known when some check gives it (the check that raises it is named on record)."""
    if code in REASONS:
        return REASONS[code]
    check_id, _, name = code.rpartition("/")
    if name in ANY_CHECK and "/" not in check_id:
        return ANY_CHECK[name]
    if not check_id:
        return next((facts for known, facts in REASONS.items() if known.endswith(f"/{name}")), None)
    return None


def is_known(code: str) -> bool:
    """Whether some part of the harness gives this `<check id>/<reason>` code."""
    return "/" in code and declared_facts(code) is not None

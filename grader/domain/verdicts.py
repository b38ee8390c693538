"""Verdicts that depend only on measurements and targets.

The live checks and the re-scoring of stored results (after a rubric change) both use these, so a
re-scored report says exactly what a fresh run would.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

from grader.domain.reasons import Failure, reason
from grader.domain.results import Flag, SubmissionResult
from grader.domain.rubric import Targets

INTEGRITY_FLAG_START = "reported accuracy "
UNVERIFIED = "unverified: "  # the start of the notes `review` derives

SERVE_ANSWERS = ("serve.sample_prediction", "serve.heldout_accuracy")
SERVE_CHECKS = ("serve.ping", "serve.model_ready", *SERVE_ANSWERS)
# Flags derived from measurements, recomputed by every review; other flags are kept as raised.
DERIVED_FLAGS = {
    "reported-accuracy": ("train.reported_accuracy",),
    "not-torchserve": SERVE_CHECKS,
    "served-model": SERVE_ANSWERS,
}


def reported_accuracy_failure(value: float, where: str, target: float) -> Failure | None:
    if value >= target:
        return None
    return Failure(
        f"reported accuracy {value:.4f} ({where}) is below the target {target:.4f}; train "
        "longer or improve the model",
        reason("train.reported_accuracy/below-target", accuracy=value, target=target),
    )


def reported_accuracy_problem(value: float, where: str, target: float) -> str | None:
    failure = reported_accuracy_failure(value, where, target)
    return failure.message if failure else None


def heldout_accuracy_failure(measurements: dict[str, Any], target: float) -> Failure | None:
    measured = measurements["heldout_accuracy"]
    if measured >= target:
        return None
    failures = measurements.get("heldout_errors", 0)
    example = measurements.get("heldout_error_example")
    errors = f"; {failures} requests failed, e.g. {example}" if failures and example else ""
    total = measurements["heldout_total"]
    return Failure(
        f"accuracy on {total} hidden digits is {measured:.4f}, below the "
        f"target {target:.4f}{errors}; if training reported more, the served model may differ "
        "from the trained one (model definition, preprocessing)",
        reason("serve.heldout_accuracy/below-target", accuracy=measured, target=target),
    )


def heldout_accuracy_problem(measurements: dict[str, Any], target: float) -> str | None:
    failure = heldout_accuracy_failure(measurements, target)
    return failure.message if failure else None


def integrity_flag(measurements: dict[str, Any], targets: Targets) -> str | None:
    """A flag when the reported accuracy is far above what the grader measured."""
    reported = measurements.get("reported_accuracy")
    measured = measurements.get("heldout_accuracy")
    gap = targets.integrity_gap
    if not isinstance(reported, float) or not isinstance(measured, float):
        return None
    if reported - measured <= gap:
        return None
    return (
        f"{INTEGRITY_FLAG_START}{reported:.4f} is more than {gap:.2f} above the accuracy the "
        f"grader measured on hidden digits ({measured:.4f}); check that the reported figure "
        "comes from a real test run of the served model"
    )


def gpu_use_verdict(
    cuda: bool | None, device: str, standins: list[str]
) -> tuple[Literal["flag", "note"], str] | None:
    """What a GPU host learns from the CUDA probe of the training image: a flag when the student's
    image cannot use the GPU it was given, a note when that cannot be told or when the harness's
    own CPU-only stand-in replaced the student's base image (then the fault is not the student's).
    """
    if cuda is False and standins:
        return (
            "note",
            f"infrastructure: training was given {device}, but the harness built the training "
            f"image on its CPU-only stand-in for {', '.join(standins)} (the image could not be "
            "had on this host), so it trained on the CPU; the student's own image was not tried "
            "on the GPU",
        )
    if cuda is False:
        return (
            "flag",
            f"training was given {device}, but torch in the training image does not see CUDA "
            "(torch.cuda.is_available() is False): it trained on the CPU; use a CUDA-enabled "
            "base image and a CUDA build of torch",
        )
    if cuda is None:
        return (
            "note",
            f"training was given {device}; whether torch in the training image sees CUDA "
            "could not be told (python3 -c 'import torch' did not run in it)",
        )
    return None


def _short(digest: Any) -> str:
    return str(digest)[:12]


def served_model_flag(measurements: dict[str, Any]) -> str | None:
    """A flag when the weights in the served archive are not those the image was built with."""
    served = measurements.get("served_model_sha256")
    expected = measurements.get("expected_model_sha256")
    if not isinstance(served, str) or not isinstance(expected, str) or served == expected:
        return None
    origin = measurements.get("expected_model_origin")
    what = (
        "the model committed in the serve context (training produced none)"
        if origin == "committed"
        else "the model training produced"
    )
    return (
        f"the served model is not {what}: {measurements.get('served_model_file')} in "
        f"{measurements.get('served_model_archive')} has sha256 {_short(served)}..., the "
        f"expected file {_short(expected)}...; archive the model file the grader places at "
        "serve.model_path when the image is built, not weights of your own"
    )


def not_torchserve_flag(measurements: dict[str, Any]) -> str | None:
    if measurements.get("server_is_torchserve") is not False:
        return None
    processes = measurements.get("server_processes") or []
    shown = "; ".join(str(p)[:120] for p in processes[:5]) or "none"
    return (
        "the server is not TorchServe: no TorchServe process (org.pytorch.serve.ModelServer) runs "
        f"in the inference container (processes: {shown}); its answers do not come from a "
        "model served by TorchServe"
    )


def integrity_flags(measurements: dict[str, Any], targets: Targets) -> list[Flag]:
    """Every flag the measurements call for, with the checks each concerns."""
    found = {
        "reported-accuracy": integrity_flag(measurements, targets),
        "not-torchserve": not_torchserve_flag(measurements),
        "served-model": served_model_flag(measurements),
    }
    return [Flag(i, text, list(DERIVED_FLAGS[i])) for i, text in found.items() if text]


def unverified_notes(measurements: dict[str, Any]) -> list[str]:
    """What the grader could not check: a reported accuracy with no held-out measurement, and
    served weights it could not compare."""
    notes = []
    reported = measurements.get("reported_accuracy")
    total = measurements.get("heldout_total", 0)
    measured = "heldout_accuracy" in measurements and measurements.get("heldout_errors", 0) < total
    if isinstance(reported, float) and not measured:
        notes.append(
            f"{UNVERIFIED}the reported accuracy {reported:.4f} could not be checked: the grader "
            "measured no accuracy of the served model on hidden digits"
        )
    problem = measurements.get("served_model_problem")
    if problem and measurements.get("server_is_torchserve") is not False:
        notes.append(
            f"{UNVERIFIED}whether the served model is the trained one could not be told: {problem}"
        )
    return notes


def review(
    result: SubmissionResult, targets: Targets, penalty: bool, cleared: Collection[str] = ()
) -> None:
    """Derive flags and "unverified" notes from the measurements, mark the flags a TA cleared,
    and give every check its points: a pass earns its maximum unless `penalty` is on and a
    flag still standing concerns it.

    Idempotent: the live checks run it after every check and re-scoring runs it again.
    """
    measurements = result.measurements
    kept = [f for f in result.integrity_flags if f.id not in DERIVED_FLAGS]
    result.integrity_flags = kept + integrity_flags(measurements, targets)
    for flag in result.integrity_flags:
        flag.cleared = flag.id in cleared
    result.notes = [n for n in result.notes if not n.startswith(UNVERIFIED)]
    result.notes += unverified_notes(measurements)
    standing = [f for f in result.integrity_flags if not f.cleared]
    for check_id, check in result.checks.items():
        withheld = [f.id for f in standing if check_id in f.checks] if penalty else []
        passed = check.status == "passed"
        check.withheld_by = withheld if passed else []
        check.points = check.max_points if passed and not withheld else 0.0
        if passed:
            check.message = (
                f"points withheld until a TA clears integrity flag {', '.join(withheld)} "
                f"(`grader flags clear {result.submission_id}:{withheld[0]}`)"
                if withheld
                else ""
            )


def clear(result: SubmissionResult, flag_id: str) -> None:
    """A TA's decision on one flag: it no longer stands, and the points it withheld return."""
    for flag in result.integrity_flags:
        if flag.id == flag_id:
            flag.cleared = True
    for check in result.checks.values():
        if flag_id in check.withheld_by:
            check.withheld_by = [i for i in check.withheld_by if i != flag_id]
            if not check.withheld_by:
                check.points, check.message = check.max_points, ""

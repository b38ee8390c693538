"""Verdicts that depend only on measurements and targets.

The live checks and the re-scoring of stored results (after a rubric change) both use these, so a
re-scored report says exactly what a fresh run would.
"""

from __future__ import annotations

from typing import Any, Literal

from grader.rubric import Targets

INTEGRITY_FLAG_START = "reported accuracy "


def reported_accuracy_problem(value: float, where: str, target: float) -> str | None:
    if value >= target:
        return None
    return (
        f"reported accuracy {value:.4f} ({where}) is below the target {target:.4f}; train "
        "longer or improve the model"
    )


def heldout_accuracy_problem(measurements: dict[str, Any], target: float) -> str | None:
    measured = measurements["heldout_accuracy"]
    if measured >= target:
        return None
    failures = measurements.get("heldout_errors", 0)
    example = measurements.get("heldout_error_example")
    errors = f"; {failures} requests failed, e.g. {example}" if failures and example else ""
    return (
        f"accuracy on {measurements['heldout_total']} hidden digits is {measured:.4f}, below the "
        f"target {target:.4f}{errors}; if training reported more, the served model may differ "
        "from the trained one (model definition, preprocessing)"
    )


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

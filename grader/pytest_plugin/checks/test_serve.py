"""The inference half: Dockerfile, image with the trained model, /ping, model, predictions."""

from __future__ import annotations

import base64
import json

from grader.domain.reasons import reason
from grader.domain.results import WrongDigit
from grader.domain.verdicts import heldout_accuracy_failure
from grader.engine.integrity import is_torchserve, served_model, server_processes, sha256_of
from grader.pytest_plugin.plugin import SubmissionGrading, check, fail_check
from grader.stages.serving import PredictionError, Server, png, predict_digit, predict_heldout
from grader.stages.torchserve import json_body

WRONG_DIGITS_KEPT = 200  # in heldout.json
WRONG_DIGITS_SHOWN = 24  # as images in the reports


@check("serve.dockerfile")
def test_dockerfile(grading: SubmissionGrading) -> None:
    grading.lint_dockerfile("serve")


@check("serve.build")
def test_build(grading: SubmissionGrading) -> None:
    grading.fail_unless_built(grading.serving_build(), "inference")


@check("serve.ping")
def test_ping(grading: SubmissionGrading) -> None:
    server = grading.server()
    outcome = grading.server_health()
    _record_token(grading, server)
    if not outcome.ok:
        fail_check(outcome.message, outcome.log, outcome.reason)
    _record_processes(grading, server)


def _record_token(grading: SubmissionGrading, server: Server) -> None:
    """Token authorization was on and the grader got through with key_file.json: advice."""
    if server.token_read:
        grading.result.measurements["server_token_auth"] = True


def _record_processes(grading: SubmissionGrading, server: Server) -> None:
    """Whether TorchServe is what answers: its Java server among the container's processes."""
    processes = server_processes(server.running.container)
    measurements = grading.result.measurements
    if processes is None:  # what an earlier look found stands
        return
    measurements["server_is_torchserve"] = is_torchserve(processes)
    measurements["server_processes"] = [line[:300] for line in processes[:20]]


def _verify_served_model(grading: SubmissionGrading, server: Server) -> None:
    """Hash the weights in the archive TorchServe loaded and the file the image was built with."""
    measurements = grading.result.measurements
    if "server_is_torchserve" not in measurements:
        measurements["served_model_problem"] = "the engine could not list the server's processes"
        return
    if not measurements["server_is_torchserve"]:
        return
    assert server.api is not None
    submission = grading.submission
    origin = grading.serving_build().model_origin
    expected = (
        grading.trained_model()
        if origin == "trained"
        else submission.serve.context / submission.serve.model_path
    )
    if expected is None or expected.is_symlink() or not expected.is_file():
        measurements["served_model_problem"] = "the model the image was built with is gone"
        return
    measurements["expected_model_origin"] = origin
    measurements["expected_model_sha256"] = sha256_of(expected)
    try:
        description = json_body(server.api.describe(submission.serve.model_name))
    except OSError as error:  # requests' errors included
        measurements["served_model_problem"] = f"the model description did not come ({error})"
        return
    found = served_model(server.running.container, description, measurements["server_processes"])
    measurements.update(
        served_model_archive=found.archive,
        served_model_file=found.serialized_file,
        served_model_sha256=found.sha256,
        served_model_problem=found.problem,
    )


@check("serve.model_ready")
def test_model_ready(grading: SubmissionGrading) -> None:
    grading.require_healthy_server()
    outcome = grading.model_readiness()
    server = grading.server()
    _record_token(grading, server)
    if not outcome.ok:
        fail_check(outcome.message, outcome.log, outcome.reason)
    _record_processes(grading, server)  # the workers run by now
    _verify_served_model(grading, server)


@check("serve.sample_prediction")
def test_sample_prediction(grading: SubmissionGrading) -> None:
    server = grading.require_ready_model()
    assert server.api is not None
    serve = grading.submission.serve
    if serve.sample_image is None or not serve.sample_image.is_file():
        fail_check(
            f"no handwritten digit image found in {serve.context.name}/: add one (PNG or JPEG), "
            "e.g. digit_7.png, or set serve.sample_image in submission.toml",
            reason=reason(
                "serve.sample_prediction/no-sample-image", folder=f"{serve.context.name}/"
            ),
        )
    if serve.sample_label is None:
        fail_check(
            f"cannot tell which digit {serve.sample_image.name} shows: put the digit in its name "
            "(e.g. digit_7.png) or set serve.sample_label in submission.toml",
            reason=reason(
                "serve.sample_prediction/sample-label-unknown", file=serve.sample_image.name
            ),
        )
    try:
        predicted = predict_digit(server.api, serve.model_name, serve.sample_image.read_bytes())
    except PredictionError as error:
        fail_check(error.message, server.running.log_tail(), error.reason)
    grading.result.measurements["sample_prediction"] = predicted
    if predicted != serve.sample_label:
        fail_check(
            f"{serve.sample_image.name} shows a {serve.sample_label} but the server predicted "
            f"{predicted}; check the handler's preprocessing (grey-scale, 28x28, the training "
            "normalisation, light digit on dark background)",
            reason=reason(
                "serve.sample_prediction/wrong-digit",
                file=serve.sample_image.name,
                label=serve.sample_label,
                predicted=predicted,
            ),
        )


@check("serve.heldout_accuracy")
def test_heldout_accuracy(grading: SubmissionGrading) -> None:
    server = grading.require_ready_model()
    assert server.api is not None
    profile = grading.profile
    sample = grading.hidden_sample()
    digits = sample.digits
    result = predict_heldout(
        server.api,
        grading.submission.serve.model_name,
        digits,
        profile.limits.predict_concurrency,
    )
    measured = result.accuracy
    grading.result.measurements.update(
        heldout_accuracy=measured,
        heldout_total=result.total,
        heldout_errors=result.error_count,
        heldout_error_example=result.errors[0] if result.errors else None,
        heldout_seed=sample.seed,
        heldout_pool=sample.pool_size,
    )
    artifacts = grading.artifacts()
    (artifacts / "heldout.json").write_text(
        json.dumps(
            {
                "accuracy": measured,
                "total": result.total,
                "correct": result.correct,
                "request_errors": result.error_count,
                "error_examples": result.errors,
                "seed": sample.seed,
                "wrong": [
                    {
                        "index": i,
                        "pool_index": sample.pool_indices[i],
                        "label": label,
                        "predicted": predicted,
                    }
                    for i, label, predicted in result.wrong[:WRONG_DIGITS_KEPT]
                ],
            },
            indent=2,
        )
        + "\n"
    )
    grading.result.wrong_digits = [
        WrongDigit(index, label, predicted, base64.b64encode(png(digits.image(index))).decode())
        for index, label, predicted in result.wrong[:WRONG_DIGITS_SHOWN]
    ]
    if result.error_count == result.total:
        stopped = f"; {result.errors[-1]}" if result.not_sent else ""
        # The first request's failure stands for them all: they mostly fail alike.
        why = result.first_reason or reason(
            "serve.heldout_accuracy/every-prediction-failed", error=result.errors[0]
        )
        fail_check(f"every prediction failed; first error: {result.errors[0]}{stopped}", reason=why)
    failure = heldout_accuracy_failure(
        grading.result.measurements, profile.targets.heldout_accuracy
    )
    if failure:
        fail_check(failure.message, reason=failure.reason)

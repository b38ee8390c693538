"""The training half: Dockerfile, build, training run, reported accuracy, model artifact."""

from __future__ import annotations

from grader.domain.reasons import reason
from grader.domain.verdicts import reported_accuracy_failure
from grader.pytest_plugin.plugin import SubmissionGrading, check, fail_check


@check("train.dockerfile")
def test_dockerfile(grading: SubmissionGrading) -> None:
    grading.lint_dockerfile("train")


@check("train.build")
def test_build(grading: SubmissionGrading) -> None:
    grading.fail_unless_built(grading.training_build(), "training")


@check("train.run")
def test_run(grading: SubmissionGrading) -> None:
    training = grading.training_run()
    run = training.run
    limits = grading.profile.limits
    log = grading.log(run.log_path)
    if run.start_error:
        fail_check(
            f"the training container could not start: {run.start_error}; the image's CMD (or "
            "train.command) must name a program that exists in the image",
            reason=reason("train.run/cannot-start", error=run.start_error),
        )
    if run.stopped:
        stopped = reason("train.run/stopped", why=run.stopped)
        fail_check(f"training was stopped: {run.stopped}", log, stopped)
    if run.timed_out:
        fail_check(
            f"training did not finish within the limit of {limits.train_seconds:.0f} s and was "
            "killed; train for fewer epochs or on less data",
            log,
            reason("train.run/timeout", limit_s=limits.train_seconds),
        )
    if run.oom_killed:
        fail_check(
            f"training was killed for using more than {limits.memory_mb} MB of memory; use "
            "smaller batches or do not load the whole dataset at once",
            log,
            reason("train.run/out-of-memory", limit_mb=limits.memory_mb),
        )
    if run.exit_code != 0:
        fail_check(
            f"training exited with code {run.exit_code} (see the training log)",
            log,
            reason("train.run/exit-code", exit_code=str(run.exit_code)),
        )


@check("train.reported_accuracy")
def test_reported_accuracy(grading: SubmissionGrading) -> None:
    training = grading.require_finished_training()
    target = grading.profile.targets.reported_accuracy
    reported = training.reported
    if reported is None:
        found = "no accuracy found"
        if training.metrics_problem:
            found = f"{training.metrics_problem}; no accuracy line in the log either"
        fail_check(
            f"{found}: write $OUTPUT_DIR/metrics.json with "
            '{"test_accuracy": 0.98} or print a line such as '
            "`Test set: Average loss: 0.0267, Accuracy: 9913/10000 (99%)`",
            grading.log(training.run.log_path),
            reason("train.reported_accuracy/not-reported"),
        )
    where = f"{reported.source}: {reported.text}"
    grading.result.measurements["reported_accuracy"] = reported.value
    grading.result.measurements["reported_accuracy_source"] = reported.source
    grading.result.measurements["reported_accuracy_where"] = where
    failure = reported_accuracy_failure(reported.value, where, target)
    if failure:
        fail_check(failure.message, reason=failure.reason)


@check("train.model_artifact")
def test_model_artifact(grading: SubmissionGrading) -> None:
    training = grading.training_run()
    model_file = grading.submission.train.model_file
    if training.model_file is None and training.model_problem:
        not_copied = reason("train.model_artifact/not-copied", file=model_file)
        fail_check(training.model_problem, reason=not_copied)
    if training.model_file is None:
        fail_check(
            f"training did not write {model_file} to $OUTPUT_DIR (/output); save the model "
            f"with torch.save(model.state_dict(), os.path.join(os.environ['OUTPUT_DIR'], "
            f"'{model_file}')) or set train.model_file in submission.toml",
            grading.log(training.run.log_path, 10),
            reason("train.model_artifact/not-written", file=model_file),
        )
    if training.model_file.stat().st_size == 0:
        fail_check(
            f"{model_file} written by training is empty",
            reason=reason("train.model_artifact/empty", file=model_file),
        )
    grading.result.measurements["model_bytes"] = training.model_file.stat().st_size

"""The checks the harness grades: one table that every part reads.

Check ids, titles, the stage each belongs to, the logs that explain a failure, the rubric target
a check is judged against and the test function that implements it are the harness's; a rubric
only gives the checks points (and the profiles targets). Adding a check is one entry here and
one test function carrying its `@check` marker in `grader/pytest_plugin/checks/`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Stage = Literal["env", "train", "serve"]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    stage: Stage
    points: float  # the default, when a rubric gives the check none
    module: str  # the check module (file name without .py) of the test that implements it
    function: str  # that test's function name
    # Artifact files, in the submission's artifacts folder, that explain a failure.
    logs: tuple[str, ...] = ()
    # The rubric target (a field of the profile's targets) the check is judged against, if any;
    # the measurement of the same name is what a stored result is judged again with.
    target: str | None = None

    @property
    def test(self) -> str:
        return f"{self.module}.py::{self.function}"


CHECKS: tuple[Check, ...] = (
    # Lab step 1, the machine's own.
    Check("env.alpine_run",
          "An alpine container runs and lists / (docker run alpine ls /)",
          "env", 0, "test_env", "test_alpine_run"),
    Check("env.alpine_interactive",
          "An interactive alpine shell works in a pseudo-terminal (docker run -it alpine sh)",
          "env", 0, "test_env", "test_alpine_interactive"),
    Check("train.dockerfile",
          "Training Dockerfile exists, parses, and its final stage starts from a CUDA-enabled "
          "image",
          "train", 5, "test_train", "test_dockerfile"),
    Check("train.build",
          "The training image builds within the time limit",
          "train", 10, "test_train", "test_build", logs=("train-build.log",)),
    Check("train.run",
          "Training exits 0 within the time limit, without network",
          "train", 10, "test_train", "test_run", logs=("train.log",)),
    Check("train.reported_accuracy",
          "The accuracy the training run reports reaches the target",
          "train", 10, "test_train", "test_reported_accuracy", logs=("train.log",),
          target="reported_accuracy"),
    Check("train.model_artifact",
          "The model file was written to $OUTPUT_DIR and copied out",
          "train", 5, "test_train", "test_model_artifact", logs=("train.log",)),
    Check("serve.dockerfile",
          "Inference Dockerfile exists, parses, and starts from a GPU-capable image",
          "serve", 5, "test_serve", "test_dockerfile"),
    Check("serve.build",
          "The TorchServe image builds with the trained model",
          "serve", 10, "test_serve", "test_build", logs=("serve-build.log",)),
    Check("serve.ping",
          'GET /ping answers {"status": "Healthy"}',
          "serve", 10, "test_serve", "test_ping", logs=("server.log",)),
    Check("serve.model_ready",
          "The management API lists the model with at least one READY worker",
          "serve", 5, "test_serve", "test_model_ready", logs=("server.log",)),
    Check("serve.sample_prediction",
          "The student's own handwritten digit is classified as its label",
          "serve", 10, "test_serve", "test_sample_prediction", logs=("server.log",)),
    Check("serve.heldout_accuracy",
          "Hidden MNIST digits sent to /predictions reach the target accuracy",
          "serve", 20, "test_serve", "test_heldout_accuracy", logs=("server.log",),
          target="heldout_accuracy"),
)  # fmt: skip

_BY_ID = {check.id: check for check in CHECKS}
_BY_TEST = {(check.module, check.function): check for check in CHECKS}


def check_ids() -> tuple[str, ...]:
    """Every check id, in grading order."""
    return tuple(_BY_ID)


def check_by_id(check_id: str) -> Check | None:
    return _BY_ID.get(check_id)


def check_by_test(module: str, function: str) -> Check | None:
    """The check a test function implements: `("test_train", "test_run")` -> train.run."""
    return _BY_TEST.get((module, function))


@dataclass(frozen=True)
class Implementation:
    """A collected test function and the check id its `@check` marker names."""

    check_id: str
    module: str
    function: str

    @property
    def test(self) -> str:
        return f"{self.module}.py::{self.function}"


def implementation_problems(found: Iterable[Implementation]) -> list[str]:
    """What is wrong with the collected check tests against the table: a marker naming no check,
    a check carried by several tests, a check no test carries. Empty when every check has exactly
    one test. The marker decides which check a test is: a course's own check module may name its
    tests as it likes (the table's `test` is where the bundled implementation lives)."""
    problems: list[str] = []
    carriers: dict[str, list[Implementation]] = {}
    for implementation in dict.fromkeys(found):  # one per test function, in collection order
        if implementation.check_id not in _BY_ID:
            problems.append(
                f"{implementation.test} is marked @check({implementation.check_id!r}), which is "
                f"no check of grader/domain/checks.py; known checks: {', '.join(_BY_ID)}"
            )
        else:
            carriers.setdefault(implementation.check_id, []).append(implementation)
    for check in CHECKS:
        tests = carriers.get(check.id, [])
        if len(tests) > 1:
            problems.append(
                f"check {check.id!r} is marked on {len(tests)} tests "
                f"({', '.join(test.test for test in tests)}); exactly one, {check.test}, may "
                "carry it"
            )
    missing = [check for check in CHECKS if check.id not in carriers]
    if missing:
        problems.append(
            "no collected test implements "
            + ", ".join(f"{check.id} ({check.test})" for check in missing)
            + "; grade with the check modules (--pyargs grader.pytest_plugin.checks)"
        )
    return problems

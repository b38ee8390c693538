"""What a check gets as `grading`: one submission under grading, its stages, and its result
record. Checks call its plain methods; it records what the stages measured."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import pytest

from grader.domain.accuracy import training_curve
from grader.domain.dataset import HiddenSample
from grader.domain.handins import Intake, refusal
from grader.domain.intake import IntakeRefused
from grader.domain.reasons import Reason
from grader.domain.rubric import Profile
from grader.domain.submission import Submission
from grader.domain.verdicts import gpu_use_verdict
from grader.engine.containers import log_excerpt
from grader.engine.gpus import describe_device
from grader.pytest_plugin.checking import fail_check
from grader.pytest_plugin.run import GradingRun
from grader.stages.grading import Grader, ImageBuild, TrainingRun
from grader.stages.labsteps import StepResult
from grader.stages.lint import Half, dockerfile_problem
from grader.stages.serving import Outcome, Server


class SubmissionGrading:
    """What a check sees: one submission, the grader's stages for it, and its result record."""

    def __init__(self, run: GradingRun, intake: Intake) -> None:
        self._run = run
        self.intake = intake
        self.result = run.result_for(intake)

    @property
    def profile(self) -> Profile:
        return self._run.profile

    @property
    def submission(self) -> Submission:
        """The loaded submission; an invalid `submission.toml` fails every check with its reason."""
        __tracebackhide__ = True
        elapsed = time.monotonic() - self._run.started.setdefault(self.intake.id, time.monotonic())
        limit = self.profile.limits.submission_seconds
        if elapsed > limit:
            fail_check(
                f"the submission used up its {limit:g} s (limit submission_seconds) after "
                f"{elapsed:.0f} s; this check and the ones left were not run",
                reason=Reason("submission-time", {"limit_s": limit}),
            )
        reason = refusal(self.intake)
        if reason is not None or self.intake.submission is None:
            refused = isinstance(self.intake.problem, IntakeRefused)  # archives' too
            why = Reason("intake-refused") if refused else Reason("manifest-invalid")
            fail_check(str(reason), reason=why)
        return self.intake.submission

    @property
    def _grader(self) -> Grader:
        return self._run.grader

    # What the checks ask for, as plain steps of this submission.

    def alpine_step(self, step: Literal["run", "interactive"]) -> StepResult:
        """Lab step 1 on this host: every submission shares the answer."""
        return self._grader.alpine_step(step)

    def artifacts(self) -> Path:
        """The submission's folder of reports' artifacts (logs, held-out answers)."""
        return self._grader.artifacts(self.submission)

    def trained_model(self) -> Path | None:
        """The model file training wrote, if any."""
        return self._grader.trained_model(self.submission)

    def hidden_sample(self) -> HiddenSample:
        """The run's hidden digits, the same for every submission."""
        return self._run.hidden_sample()

    def server_health(self) -> Outcome:
        """Whether the submission's server answered /ping as healthy, and what it answered."""
        return self._grader.server_healthy(self.submission)

    def model_readiness(self) -> Outcome:
        """Whether the submission's model has a READY worker, and what the server said."""
        return self._grader.model_ready(self.submission)

    def lint_dockerfile(self, half: Half) -> None:
        """Fail unless the half's Dockerfile parses and builds on a CUDA-enabled image."""
        __tracebackhide__ = True
        problem = dockerfile_problem(self.submission, half)
        if problem is not None:
            fail_check(problem.message, reason=problem.reason)

    def fail_unless_built(self, build: ImageBuild, what: str) -> None:
        """The build check's verdict: the builder's error and the end of its log."""
        __tracebackhide__ = True
        if not build.ok:
            log = self.log(build.build.log_path) if build.build else ""
            fail_check(f"the {what} image did not build: {build.error}", log, build.reason)

    def _record_build(self, build: ImageBuild, role: str) -> ImageBuild:
        for base in build.base_images:
            if base.standin:
                self.result.note(
                    f"base image {base.reference} is not on this host and cannot be pulled; "
                    f"the build used {base.standin.description}"
                )
        self.result.measurements[f"{role}_base_images"] = [b.to_json() for b in build.base_images]
        if build.build:
            self.result.measurements[f"{role}_build_seconds"] = round(build.build.duration_s, 1)
        return build

    def _require(self, build: ImageBuild, what: str) -> ImageBuild:
        __tracebackhide__ = True
        if not build.ok:
            pytest.skip(f"skipped: the {what} image did not build")
        return build

    def training_build(self) -> ImageBuild:
        return self._record_build(self._grader.training_build(self.submission), "train")

    def require_training_build(self) -> ImageBuild:
        __tracebackhide__ = True
        return self._require(self.training_build(), "training")

    def training_run(self) -> TrainingRun:
        self.require_training_build()
        run = self._grader.training_run(self.submission)
        self.result.measurements["train_device"] = describe_device(self._grader.gpus)
        self.result.measurements["train_seconds"] = round(run.run.duration_s, 1)
        self.result.measurements["train_exit_code"] = run.run.exit_code
        if run.run.log_path.is_file():
            log = run.run.log_path.read_text(encoding="utf-8", errors="replace")
            self.result.training_curve = training_curve(log)
        for note in run.notes:
            self.result.note(note)
        if self._grader.gpus != "none" and "train_cuda_available" not in self.result.measurements:
            self._check_gpu_use()
        return run

    def _check_gpu_use(self) -> None:
        """On a GPU host: could the student's training use the GPU it was given?"""
        cuda = self._grader.cuda_in_training_image(self.submission)
        self.result.measurements["train_cuda_available"] = cuda
        standins = [
            base.reference
            for base in self._grader.training_build(self.submission).base_images
            if base.standin
        ]
        verdict = gpu_use_verdict(cuda, describe_device(self._grader.gpus), standins)
        if verdict is not None:
            kind, text = verdict
            if kind == "flag":  # a stable id, so a TA's clearing survives re-scoring
                self.result.flag(text, "gpu-unused")
            else:
                self.result.note(text)

    def require_finished_training(self) -> TrainingRun:
        __tracebackhide__ = True
        run = self.training_run()
        if not run.succeeded:
            pytest.skip("skipped: training did not finish successfully")
        return run

    def serving_build(self) -> ImageBuild:
        build = self._record_build(self._grader.serving_build(self.submission), "serve")
        if build.model_origin == "committed":
            self.result.note(
                "training produced no model; the inference image was built with the model "
                f"committed at {self.submission.serve.model_path} in the serve context"
            )
        return build

    def server(self) -> Server:
        __tracebackhide__ = True
        stopped_in = self._run.stopped.get(self.intake.id)
        if stopped_in is not None:
            pytest.skip(f"skipped: the server was stopped when {stopped_in} ran out of time")
        self._require(self.serving_build(), "inference")
        server = self._grader.server(self.submission)
        self.result.measurements["serve_device"] = describe_device(self._grader.gpus)
        for note in server.notes:
            self.result.note(note)
        return server

    def require_healthy_server(self) -> Server:
        __tracebackhide__ = True
        server = self.server()
        if not self._grader.server_healthy(self.submission).ok:
            pytest.skip("skipped: the server did not answer /ping")
        return server

    def require_ready_model(self) -> Server:
        __tracebackhide__ = True
        server = self.require_healthy_server()
        if not self._grader.model_ready(self.submission).ok:
            pytest.skip("skipped: the model has no READY worker")
        for note in server.notes:
            self.result.note(note)
        return server

    def log(self, path: Path, lines: int = 30) -> str:
        return log_excerpt(path, lines)

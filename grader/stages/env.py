"""The environment stage: lab step 1 (an alpine container, plainly and interactively) on the
grading host itself.

The step says whether Docker works here, not anything about a submission, so it is done once per
grader and every submission shares its answer.
"""

from __future__ import annotations

import os
from typing import Literal

from grader.domain.errors import BaseImageUnavailable
from grader.engine.containers import remove_labelled
from grader.stages.labsteps import ALPINE, StepResult, interactive_session, run_listing
from grader.stages.workspace import Workspace

LAB_STEPS = "lab-steps"  # the submission label of containers that serve every submission
Step = Literal["run", "interactive"]


class EnvStage:
    """Runs each lab step on this host at most once and remembers its result."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._steps: dict[Step, StepResult] = {}

    def step(self, step: Step) -> StepResult:
        if step not in self._steps:
            workspace = self.workspace
            # Workers run this at the same time: each removes only its own containers.
            labels = workspace.labels(LAB_STEPS, f"alpine-{os.getpid()}")
            try:
                workspace.base_images.ensure(ALPINE)
            except BaseImageUnavailable as error:
                missing = f"{error}; run `grader setup` to build the stand-in"
                result = StepResult(ok=False, detail=missing)
            else:
                # A container's start-up and first answers: as long as a server's may take.
                timeout = workspace.profile.limits.server_ready_seconds
                if step == "run":
                    result = run_listing(workspace.client, ALPINE, labels, timeout)
                else:
                    result = interactive_session(ALPINE, labels, timeout)
                remove_labelled(workspace.client, labels, images=False)
            self._steps[step] = result
        return self._steps[step]

"""The Dockerfile check of one submission's half, before anything is built: the file is there,
parses, and its final stage builds on a CUDA-enabled image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grader.domain.dockerfile import cuda_base_problem, read_dockerfile
from grader.domain.errors import DockerfileError
from grader.domain.reasons import Reason
from grader.domain.submission import Submission

Half = Literal["train", "serve"]

# Where the lab's own repository puts each half's Dockerfile.
LAB_NAMES = {
    "train": "Dockerfile.gpu or Dockerfile.cpu",
    "serve": "Dockerfile.infer.gpu or Dockerfile.infer.cpu",
}


@dataclass(frozen=True)
class DockerfileProblem:
    """What is wrong with a half's Dockerfile, told to the student and as data."""

    message: str
    reason: Reason


def dockerfile_problem(submission: Submission, half: Half) -> DockerfileProblem | None:
    """What is wrong with the half's Dockerfile; None when it parses and builds on CUDA."""
    spec = submission.train if half == "train" else submission.serve
    what = "training" if half == "train" else "inference"
    try:
        dockerfile = read_dockerfile(spec.dockerfile, submission.shown(spec.dockerfile))
    except DockerfileError as error:
        if not spec.dockerfile.exists():
            return DockerfileProblem(
                f"{error}: the {what} half is missing; put its Dockerfile at "
                f"{half}/Dockerfile, or name it {LAB_NAMES[half]} at the top of the hand-in as "
                f"the lab's repository does, or set {half}.context and {half}.dockerfile in "
                "submission.toml",
                Reason(f"{half}.dockerfile/missing", {"file": f"{half}/Dockerfile"}),
            )
        shown = str(submission.shown(spec.dockerfile))
        return DockerfileProblem(
            str(error), Reason(f"{half}.dockerfile/unreadable", {"file": shown})
        )
    problem = cuda_base_problem(dockerfile)
    if problem:
        base = dockerfile.resolve_base(dockerfile.final_stage)
        return DockerfileProblem(problem, Reason(f"{half}.dockerfile/not-cuda", {"base": base}))
    return None

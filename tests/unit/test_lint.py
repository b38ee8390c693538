"""The Dockerfile check of a half, before anything is built."""

from __future__ import annotations

from pathlib import Path

from grader.domain.submission import load_submission
from grader.stages.lint import dockerfile_problem

CUDA_BASE = "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"


def _hand_in(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_a_missing_half_names_where_its_dockerfile_goes(tmp_path):
    submission = load_submission(_hand_in(tmp_path, {"train/Dockerfile": f"FROM {CUDA_BASE}\n"}))
    problem = dockerfile_problem(submission, "serve")
    assert problem is not None
    assert (
        "the inference half is missing; put its Dockerfile at serve/Dockerfile, or name it "
        "Dockerfile.infer.gpu or Dockerfile.infer.cpu at the top of the hand-in"
    ) in problem.message
    assert problem.reason.code == "serve.dockerfile/missing"
    assert dict(problem.reason.facts) == {"file": "serve/Dockerfile"}


def test_a_base_without_cuda_is_named(tmp_path):
    submission = load_submission(_hand_in(tmp_path, {"train/Dockerfile": "FROM python:3.11\n"}))
    problem = dockerfile_problem(submission, "train")
    assert problem is not None
    assert "python:3.11" in problem.message
    assert problem.reason.code == "train.dockerfile/not-cuda"
    assert dict(problem.reason.facts) == {"base": "python:3.11"}


def test_a_cuda_base_passes(tmp_path):
    submission = load_submission(_hand_in(tmp_path, {"train/Dockerfile": f"FROM {CUDA_BASE}\n"}))
    assert dockerfile_problem(submission, "train") is None

"""The stages of one submission: plain classes that work without pytest, small enough to read,
that decide a refused build before asking the engine and remember what they decided."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from grader.domain.rubric import load_rubric
from grader.domain.settings import Settings
from grader.domain.submission import ServeSpec, Submission, TrainSpec
from grader.stages.build import ImageBuilder
from grader.stages.serve import ServeStage
from grader.stages.train import TrainStage
from grader.stages.workspace import Workspace

STAGES = Path(__file__).resolve().parents[2] / "grader" / "stages"


def test_every_stage_module_imports_without_pytest():
    listing = (
        "import importlib, pkgutil, sys\n"
        "import grader.stages\n"
        "for module in pkgutil.iter_modules(grader.stages.__path__):\n"
        "    importlib.import_module('grader.stages.' + module.name)\n"
        "tops = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(tops & {'pytest', '_pytest'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("module", sorted(STAGES.glob("*.py")), ids=lambda path: path.name)
def test_no_stage_class_is_longer_than_two_hundred_lines(module):
    tree = ast.parse(module.read_text(encoding="utf-8"))
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200
    }
    assert long == {}


@pytest.fixture
def said():
    return []


@pytest.fixture
def workspace(tmp_path, said):
    # No engine at all: whatever these tests reach must be decided before the engine is asked.
    return Workspace(
        client=None,
        settings=Settings(tmp_path / "home", None, 1),
        profile=load_rubric().profile("offline"),
        artifacts_root=tmp_path / "artifacts",
        run_id="20260101-000000-abcdef",
        say=said.append,
    )


def hand_in(root: Path, serve_dockerfile: str = "serve/Dockerfile") -> Submission:
    root.mkdir(parents=True, exist_ok=True)
    return Submission(
        id="ada",
        root=root,
        student_name=None,
        train=TrainSpec(
            context=root / "train",
            dockerfile=root / "train" / "Dockerfile",
            command=(),
            model_file="mnist_cnn.pt",
        ),
        serve=ServeSpec(
            context=root / "serve",
            dockerfile=root / serve_dockerfile,
            model_name="mnist",
            model_path="mnist_cnn.pt",
            sample_image=None,
            sample_label=None,
        ),
    )


def test_a_note_about_the_host_is_said_once_per_topic_and_written_to_every_log(
    workspace, said, tmp_path
):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    workspace.tell_host_note("output size only watched", first)
    workspace.tell_host_note("output size only watched", second)
    workspace.tell_host_note("builds reach the host: no iptables", first, topic="network")
    workspace.tell_host_note("builds reach the host: not root", second, topic="network")
    assert said == ["output size only watched", "builds reach the host: no iptables"]
    assert "output size only watched" in first.read_text()
    assert "builds reach the host: no iptables" in first.read_text()
    assert "output size only watched" in second.read_text()
    assert "builds reach the host: not root" in second.read_text()


def test_a_training_build_without_a_dockerfile_fails_naming_it_and_is_decided_once(
    workspace, tmp_path
):
    submission = hand_in(tmp_path / "ada")
    training = TrainStage(workspace, ImageBuilder(workspace), dataset=None)
    build = training.build(submission)
    assert not build.ok
    assert "train/Dockerfile" in build.error
    assert training.trained_model(submission) is None
    # Every check of the stage reads this outcome, even once the file appears.
    (submission.root / "train").mkdir()
    (submission.root / "train" / "Dockerfile").write_text("FROM python:3.11-slim\n")
    assert training.build(submission) is build


def test_a_serve_build_without_its_context_names_the_folder(workspace, tmp_path):
    submission = hand_in(tmp_path / "ada")
    builder = ImageBuilder(workspace)
    serving = ServeStage(workspace, builder, TrainStage(workspace, builder, dataset=None))
    build = serving.build(submission)
    assert not build.ok
    assert "serve/" in build.error
    assert serving.build(submission) is build


def test_a_serve_dockerfile_outside_the_serve_context_is_refused_before_building(
    workspace, tmp_path
):
    submission = hand_in(tmp_path / "ada", serve_dockerfile="Dockerfile.infer")
    (submission.root / "serve").mkdir()
    (submission.root / "serve" / "mnist_cnn.pt").write_bytes(b"committed weights")
    (submission.root / "Dockerfile.infer").write_text("FROM pytorch/torchserve:latest-gpu\n")
    builder = ImageBuilder(workspace)
    serving = ServeStage(workspace, builder, TrainStage(workspace, builder, dataset=None))
    build = serving.build(submission)
    assert not build.ok
    assert build.build is None
    assert "Dockerfile.infer" in build.error
    assert "serve" in build.error

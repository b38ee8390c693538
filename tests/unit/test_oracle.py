"""The by-hand oracle's own decision rules (it is a script, loaded from its path)."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.cli import ROOT

ORACLE_PATH = ROOT / "tests" / "oracle" / "oracle.py"


@pytest.fixture(scope="module")
def oracle():
    spec = importlib.util.spec_from_file_location("lab5_oracle", ORACLE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_it_shares_no_code_with_the_harness():
    tree = ast.parse(ORACLE_PATH.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0] for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }  # fmt: skip
    assert "grader" not in imported and "tests" not in imported
    assert imported <= set(sys.stdlib_module_names) | {"PIL", "__future__"}


def test_the_final_stage_base_follows_stage_names_and_args(oracle, tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG TAG=0.12.0-gpu\n"
        "FROM --platform=linux/amd64 pytorch/torchserve:${TAG} AS base\n"
        "RUN echo \\\n  hi\n"
        "FROM python:3.11 AS tools\n"
        "FROM base\n"
        "CMD serve\n"
    )
    assert oracle.final_base(dockerfile) == "pytorch/torchserve:0.12.0-gpu"
    dockerfile.write_text("# nothing here\nRUN true\n")
    with pytest.raises(ValueError, match="no FROM line"):
        oracle.final_base(dockerfile)


@pytest.mark.parametrize(
    ("image", "enabled"),
    [
        ("nvidia/cuda:10.1-cudnn7-devel", True),
        ("pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime", True),
        ("docker.io/pytorch/pytorch", True),
        ("pytorch/torchserve:0.12.0-gpu", True),
        ("pytorch/torchserve:0.12.0-cpu", False),
        ("pytorch/torchserve", False),
        ("python:3.10-slim", False),
        ("localhost:5000/nvidia/cuda", False),
    ],
)
def test_cuda_enabled_images(oracle, image, enabled):
    assert oracle.cuda_enabled(image) is enabled


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        (b"7", 7),
        (b"[7]", 7),
        (b"[[3]]", 3),
        (b'{"7": 0.98, "1": 0.02}', 7),
        (b'[{"2": 0.1, "4": 0.9}]', 4),
        (b'{"prediction": 5}', 5),
        (b'"8"', 8),
        (b"12", None),
        (b"[1, 2]", None),
        (b"true", None),
        (b"<html>", None),
        (b'{"cat": 0.9}', None),
    ],
)
def test_prediction_bodies(oracle, body, digit):
    assert oracle.digit_of(body) == digit


def test_reported_accuracy_from_metrics_then_the_log(oracle, tmp_path):
    log = (
        "Train Epoch: 2 [0/3000 (0%)]\tLoss: 0.1\n"
        "Test set: Average loss: 0.3000, Accuracy: 880/1000 (88%)\n"
        "Test set: Average loss: 0.1000, Accuracy: 955/1000 (96%)\n"
    )
    assert oracle.reported_accuracy(tmp_path, log) == pytest.approx(0.955)
    assert oracle.reported_accuracy(tmp_path, "test accuracy: 97.5%") == pytest.approx(0.975)
    assert oracle.reported_accuracy(tmp_path, "loss 0.2") is None
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.91}))
    assert oracle.reported_accuracy(tmp_path, log) == pytest.approx(0.91)
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 91}))
    assert oracle.reported_accuracy(tmp_path, log) is None


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_layouts(oracle, tmp_path):
    flat = tmp_path / "flat"
    _touch(flat, "Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.infer.gpu", "api_answer.png")
    _touch(flat, "digit_7.png")
    plan = oracle.plan_of(flat)
    assert plan.train.dockerfile == flat / "Dockerfile.gpu" and plan.train.context == flat
    assert plan.serve.dockerfile == flat / "Dockerfile.infer.gpu"
    assert (plan.sample_image, plan.sample_label) == (flat / "digit_7.png", 7)

    folders = tmp_path / "folders"
    _touch(folders, "training/Dockerfile", "inference/Dockerfile", "inference/my_3.jpg")
    (folders / "submission.toml").write_text('[serve]\nmodel_name = "digits"\n')
    plan = oracle.plan_of(folders)
    assert plan.train.context == folders / "training"
    assert plan.serve.context == folders / "inference"
    assert (plan.model_name, plan.sample_label) == ("digits", 3)

    manifest = tmp_path / "manifest"
    _touch(manifest, "a/Train.df", "serve/Dockerfile", "serve/x.png")
    (manifest / "submission.toml").write_text(
        '[train]\ncontext = "a"\ndockerfile = "Train.df"\ncommand = ["python", "t.py"]\n'
        "[serve]\nsample_label = 4\n"
    )
    plan = oracle.plan_of(manifest)
    assert plan.train.dockerfile == manifest / "a" / "Train.df"
    assert plan.command == ["python", "t.py"]
    assert (plan.sample_image, plan.sample_label) == (manifest / "serve" / "x.png", 4)

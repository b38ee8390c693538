from __future__ import annotations

from pathlib import Path

import pytest

from grader.domain.dockerfile import gpu_capability, image_name, parse_dockerfile, read_dockerfile
from grader.domain.errors import DockerfileError


def test_single_stage_with_continuations_and_comments():
    dockerfile = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "FROM pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime\n"
        "RUN apt-get update && \\\n"
        "    # a comment inside a continued line\n"
        "    apt-get install -y curl\n"
        "COPY . /app\n"
        'CMD ["python", "train.py"]\n'
    )
    (stage,) = dockerfile.stages
    assert stage.base == "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime"
    assert [i.keyword for i in stage.instructions] == ["RUN", "COPY", "CMD"]
    assert "apt-get install -y curl" in stage.instructions[0].arguments
    assert dockerfile.has_command


def test_arg_defaults_are_expanded_in_from():
    dockerfile = parse_dockerfile(
        "ARG CUDA=10.1\nARG FLAVOR\nFROM nvidia/cuda:${CUDA}-cudnn7-${FLAVOR:-devel}\n"
    )
    assert dockerfile.final_stage.base == "nvidia/cuda:10.1-cudnn7-devel"


def test_multi_stage_resolves_the_final_base_through_stage_names():
    dockerfile = parse_dockerfile(
        "FROM --platform=linux/amd64 nvidia/cuda:11.8.0-devel-ubuntu22.04 AS Build\n"
        "RUN make\n"
        "FROM build AS final\n"
        "FROM python:3.11-slim AS other\n"
        "FROM final\n"
        "COPY --from=other /x /x\n"
    )
    assert dockerfile.resolve_base(dockerfile.final_stage) == "nvidia/cuda:11.8.0-devel-ubuntu22.04"
    assert dockerfile.external_images == [
        "nvidia/cuda:11.8.0-devel-ubuntu22.04",
        "python:3.11-slim",
    ]
    assert not dockerfile.has_command


def test_scratch_is_not_an_external_image():
    assert parse_dockerfile("FROM scratch\nCOPY a /a\n").external_images == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has no instructions; it must start with FROM"),
        ("# only a comment\n", "has no instructions"),
        ("RUN echo hi\nFROM alpine\n", "RUN before the first FROM; only ARG may come before FROM"),
        ("FROM alpine\nFETCH x\n", ":2: unknown instruction 'FETCH'"),
        ("FROM alpine\nRUN\n", ":2: RUN has no arguments"),
        ("FROM a b c d\n", "FROM takes `image[:tag] [AS name]`"),
        ("ARG TAG\nFROM pytorch/pytorch:$TAG\n", "uses ARG TAG without a value"),
    ],
)
def test_parse_errors_say_what_and_where(text, message):
    with pytest.raises(DockerfileError, match=None) as raised:
        parse_dockerfile(text, Path("train/Dockerfile"))
    assert str(raised.value).startswith("train/Dockerfile")
    assert message in str(raised.value)


def test_missing_file(tmp_path):
    with pytest.raises(DockerfileError, match="no such file"):
        read_dockerfile(tmp_path / "Dockerfile")


def test_binary_file(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"\xff\xfe\x00FROM")
    with pytest.raises(DockerfileError, match="not UTF-8 text"):
        read_dockerfile(path)


def test_escape_directive(tmp_path):
    dockerfile = parse_dockerfile("# escape=`\nFROM alpine\nRUN echo a `\n  b\n")
    assert dockerfile.final_stage.instructions[0].arguments == "echo a b"


@pytest.mark.parametrize(
    ("reference", "repository", "tag"),
    [
        ("alpine", "alpine", "latest"),
        ("docker.io/library/ubuntu:22.04", "ubuntu", "22.04"),
        ("localhost:5000/team/img", "localhost:5000/team/img", "latest"),
        ("nvcr.io/nvidia/pytorch:23.10-py3@sha256:abc", "nvcr.io/nvidia/pytorch", "23.10-py3"),
    ],
)
def test_image_names_are_normalised(reference, repository, tag):
    name = image_name(reference)
    assert (name.repository, name.tag) == (repository, tag)


@pytest.mark.parametrize(
    "reference",
    [
        "nvidia/cuda:10.1-cudnn7-devel",
        "nvidia/cuda:10.1-cudnn7-runtime-ubuntu18.04",
        "pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime",
        "pytorch/pytorch",
        "docker.io/pytorch/pytorch:2.1.0-cuda12.1-cudnn8-devel",
        "pytorch/torchserve:0.12.0-gpu",
        "nvcr.io/nvidia/pytorch:23.10-py3",
    ],
)
def test_cuda_enabled_images(reference):
    assert gpu_capability(reference)


@pytest.mark.parametrize(
    "reference", ["python:3.11", "ubuntu:22.04", "pytorch/torchserve:0.12.0-cpu", "alpine"]
)
def test_cpu_only_images(reference):
    assert gpu_capability(reference) is None

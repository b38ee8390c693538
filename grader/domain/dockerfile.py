"""Reading Dockerfiles: instructions, build stages and the base images they start from.

Only what grading needs is parsed: line continuations, comments, parser directives, `ARG`
defaults used in `FROM`, `--platform`, named stages. The classic builder is the authority on
everything else; this module exists so that the lint checks and the base-image preparation can
run before (and without) a build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from grader.domain.errors import DockerfileError

KNOWN_INSTRUCTIONS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
        "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
        "WORKDIR",
    }
)  # fmt: skip

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass(frozen=True)
class Stage:
    """One `FROM` and what follows it. `base` is an image reference or an earlier stage's name."""

    index: int
    base: str
    name: str | None
    line: int
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    stages: tuple[Stage, ...]

    @property
    def final_stage(self) -> Stage:
        return self.stages[-1]

    def resolve_base(self, stage: Stage) -> str:
        """The external image a stage ultimately starts from (following `FROM <stage>`)."""
        names = {s.name: s for s in self.stages if s.name}
        seen = set()
        while stage.base.lower() in names and stage.base.lower() not in seen:
            seen.add(stage.base.lower())
            stage = names[stage.base.lower()]
        return stage.base

    @property
    def external_images(self) -> list[str]:
        """Every image the build needs from outside, in order, without duplicates."""
        stage_names = {s.name for s in self.stages if s.name}
        images: list[str] = []
        for stage in self.stages:
            base = stage.base
            if base.lower() in stage_names or base == "scratch" or base in images:
                continue
            images.append(base)
        return images

    @property
    def has_command(self) -> bool:
        """Whether the final stage itself says what to run (CMD or ENTRYPOINT)."""
        keywords = {i.keyword for i in self.final_stage.instructions}
        return bool(keywords & {"CMD", "ENTRYPOINT"})


def read_dockerfile(path: Path, shown_as: Path | None = None) -> Dockerfile:
    """Parse the Dockerfile at `path`; DockerfileError says what is wrong and where.

    Messages name the file as `shown_as` (e.g. relative to the submission) when given.
    """
    shown = shown_as or path
    if not path.is_file():
        raise DockerfileError(f"{shown}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DockerfileError(f"{shown}: not UTF-8 text ({error.reason})") from error
    return parse_dockerfile(text, shown)


def parse_dockerfile(text: str, path: Path = Path("Dockerfile")) -> Dockerfile:
    instructions = _instructions(text, path)
    if not instructions:
        raise DockerfileError(f"{path}: the file has no instructions; it must start with FROM")
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    header: tuple[str, str | None, int] | None = None
    for instruction in instructions:
        if instruction.keyword not in KNOWN_INSTRUCTIONS:
            raise DockerfileError(
                f"{path}:{instruction.line}: unknown instruction {instruction.keyword!r}"
            )
        if instruction.keyword == "FROM":
            if header is not None and current is not None:
                stages.append(_stage(len(stages), header, current))
            header = _from(instruction, global_args, path)
            current = []
        elif header is None:
            if instruction.keyword != "ARG":
                raise DockerfileError(
                    f"{path}:{instruction.line}: {instruction.keyword} before the first FROM; "
                    "only ARG may come before FROM"
                )
            name, _, default = instruction.arguments.partition("=")
            global_args[name.strip()] = _unquote(default.strip())
        else:
            assert current is not None
            current.append(instruction)
    assert header is not None and current is not None
    stages.append(_stage(len(stages), header, current))
    return Dockerfile(path=path, stages=tuple(stages))


def _stage(index: int, header: tuple[str, str | None, int], body: list[Instruction]) -> Stage:
    base, name, line = header
    return Stage(index=index, base=base, name=name, line=line, instructions=tuple(body))


def _from(
    instruction: Instruction, args: dict[str, str], path: Path
) -> tuple[str, str | None, int]:
    words = [w for w in instruction.arguments.split() if not w.startswith("--")]
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise DockerfileError(
            f"{path}:{instruction.line}: FROM takes `image[:tag] [AS name]`, "
            f"got {instruction.arguments!r}"
        )
    image, missing = _expand(words[0], args)
    if missing or not image:
        raise DockerfileError(
            f"{path}:{instruction.line}: FROM {words[0]!r} uses ARG "
            f"{', '.join(missing) or words[0]} without a value; give it a default before FROM"
        )
    name = words[2].lower() if len(words) == 3 else None
    return image, name, instruction.line


def _expand(word: str, args: dict[str, str]) -> tuple[str, list[str]]:
    """`word` with `$NAME`, `${NAME}` and `${NAME:-default}` replaced; also the names left empty."""
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1) or match.group(3)
        value = args.get(key) or match.group(2) or ""
        if not value:
            missing.append(key)
        return value

    return _VARIABLE.sub(substitute, word), missing


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _instructions(text: str, path: Path) -> list[Instruction]:
    """Logical instructions: comments dropped, continuation lines joined."""
    escape = "\\"
    lines = text.splitlines()
    # Parser directives are only recognised at the very top of the file.
    for raw in lines:
        directive = _DIRECTIVE.match(raw.strip())
        if not directive:
            break
        if directive.group(1).lower() == "escape":
            escape = directive.group(2)
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue  # comments and blank lines may sit inside a continued instruction
        if not stripped:
            continue
        if not pending:
            start = number
        if stripped.endswith(escape):
            pending.append(stripped[: -len(escape)].rstrip())
            continue
        pending.append(stripped)
        result.append(_instruction(" ".join(pending), start, path))
        pending = []
    if pending:
        result.append(_instruction(" ".join(pending), start, path))
    return result


def _instruction(text: str, line: int, path: Path) -> Instruction:
    keyword, _, arguments = text.partition(" ")
    if not arguments.strip() and keyword.upper() not in {"ONBUILD"}:
        raise DockerfileError(f"{path}:{line}: {keyword} has no arguments")
    return Instruction(keyword=keyword.upper(), arguments=arguments.strip(), line=line)


# --- base images -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageName:
    """A normalised image reference: `repository` without the default registry or `library/`."""

    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def image_name(reference: str) -> ImageName:
    name = reference.split("@", 1)[0]
    repository, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repository.startswith(prefix):
            repository = repository[len(prefix) :]
    if repository.startswith("library/"):
        repository = repository[len("library/") :]
    return ImageName(repository=repository.lower(), tag=tag)


def gpu_capability(reference: str) -> str | None:
    """Why an image is CUDA-enabled, or None when it is not known to be.

    The lab's handout uses `nvidia/cuda:*` and `pytorch/pytorch:*`; NVIDIA's NGC images and the
    GPU tags of TorchServe and TensorFlow are accepted too.
    """
    name = image_name(reference)
    repo, tag = name.repository, name.tag.lower()
    if repo in {"nvidia/cuda", "nvcr.io/nvidia/cuda"}:
        return "NVIDIA CUDA image"
    if repo.startswith("nvcr.io/nvidia/"):
        return "NVIDIA NGC image"
    if repo == "pytorch/pytorch":
        if tag == "latest" or "cuda" in tag:
            return "PyTorch image with CUDA"
        return None
    if repo == "pytorch/torchserve":
        return "TorchServe GPU image" if tag.endswith("-gpu") or "gpu" in tag else None
    if repo == "tensorflow/tensorflow":
        return "TensorFlow GPU image" if "gpu" in tag else None
    return None


def cuda_base_problem(dockerfile: Dockerfile) -> str | None:
    """Why the image a Dockerfile builds is not CUDA-enabled, or None when it is."""
    base = dockerfile.resolve_base(dockerfile.final_stage)
    if gpu_capability(base) is not None:
        return None
    return (
        f"the final stage starts FROM {base}, which is not a CUDA-enabled image; start from "
        "nvidia/cuda:<version>-cudnn*, a pytorch/pytorch:*-cuda* tag or pytorch/torchserve:*-gpu"
    )

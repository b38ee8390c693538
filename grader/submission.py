"""Submissions: finding them on disk and reading their optional `submission.toml`.

Every manifest key has a default (SPEC section 2), so a folder with `train/Dockerfile` is a
complete submission. Paths in the manifest are resolved and must stay inside the submission.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.errors import ManifestError
from grader.intake import is_archive

MANIFEST = "submission.toml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class TrainSpec:
    context: Path
    dockerfile: Path
    command: tuple[str, ...]
    model_file: str


@dataclass(frozen=True)
class ServeSpec:
    context: Path
    dockerfile: Path
    model_name: str
    model_path: str
    sample_image: Path | None
    sample_label: int | None


@dataclass(frozen=True)
class Submission:
    """A submission folder and its resolved manifest."""

    id: str
    root: Path
    student_name: str | None
    train: TrainSpec
    serve: ServeSpec
    warnings: tuple[str, ...] = field(default=())

    def shown(self, path: Path) -> Path:
        """`path` as a student sees it: relative to the submission folder."""
        return path.relative_to(self.root) if path.is_relative_to(self.root) else path

    @property
    def slug(self) -> str:
        """The id made safe for image names and file names."""
        return slugify(self.id)


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "submission"


def is_submission_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (MANIFEST, "train", "serve"))


def discover(paths: list[Path]) -> list[Path]:
    """Submissions named by `paths`: each is a submission (a folder or an archive) or a folder
    of them."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ManifestError(f"{path}: no such file or folder")
        if is_submission_dir(path) or is_archive(path):
            found.append(path.resolve())
            continue
        children = (
            sorted(p for p in path.iterdir() if is_submission_dir(p) or is_archive(p))
            if path.is_dir()
            else []
        )
        if not children:
            raise ManifestError(
                f"{path}: not a submission (no {MANIFEST}, train/ or serve/, not a .zip or "
                ".tar.gz) and holds none"
            )
        found.extend(child.resolve() for child in children)
    return found


def load_submission(root: Path) -> Submission:
    """Read a submission folder; ManifestError names the file, the key and the fix."""
    manifest_path = root / MANIFEST
    data: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            data = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ManifestError(f"{manifest_path}: not valid TOML ({error})") from None
    reader = _ManifestReader(manifest_path, root)
    reader.only_keys(data, "", {"student", "train", "serve"})
    student = reader.section(data, "student", {"id", "name"})
    train = reader.section(data, "train", {"context", "dockerfile", "command", "model_file"})
    serve = reader.section(
        data,
        "serve",
        {"context", "dockerfile", "model_name", "model_path", "sample_image", "sample_label"},
    )
    submission_id = reader.string(student, "student.id", root.name)
    if not submission_id.strip():
        reader.fail("student.id", "must not be empty")

    train_context = reader.inside(reader.string(train, "train.context", "train"), "train.context")
    serve_context = reader.inside(reader.string(serve, "serve.context", "serve"), "serve.context")
    command = train.get("command", [])
    if not isinstance(command, list) or not all(isinstance(w, str) for w in command):
        reader.fail("train.command", f"must be a list of strings, got {command!r}")

    sample_image, sample_label, warnings = _sample(reader, serve, serve_context)
    return Submission(
        id=submission_id.strip(),
        root=root,
        student_name=reader.optional_string(student, "student.name"),
        train=TrainSpec(
            context=train_context,
            dockerfile=reader.inside(
                reader.string(train, "train.dockerfile", "Dockerfile"),
                "train.dockerfile",
                base=train_context,
            ),
            command=tuple(command),
            model_file=reader.file_name(train, "train.model_file", "mnist_cnn.pt"),
        ),
        serve=ServeSpec(
            context=serve_context,
            dockerfile=reader.inside(
                reader.string(serve, "serve.dockerfile", "Dockerfile"),
                "serve.dockerfile",
                base=serve_context,
            ),
            model_name=reader.string(serve, "serve.model_name", "mnist"),
            model_path=reader.relative(serve, "serve.model_path", "mnist_cnn.pt"),
            sample_image=sample_image,
            sample_label=sample_label,
        ),
        warnings=tuple(warnings),
    )


def _sample(
    reader: _ManifestReader, serve: dict[str, Any], context: Path
) -> tuple[Path | None, int | None, list[str]]:
    """The student's own digit image and its label (from the manifest or the file name)."""
    warnings: list[str] = []
    if "sample_image" in serve:
        image = reader.inside(
            reader.string(serve, "serve.sample_image", ""), "serve.sample_image", base=context
        )
    else:
        candidates = (
            sorted(p for p in context.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if context.is_dir()
            else []
        )
        image = candidates[0] if candidates else None
        if len(candidates) > 1:
            warnings.append(
                f"several images in {context.name}/; using {candidates[0].name} "
                "(set serve.sample_image to choose)"
            )
    label = serve.get("sample_label")
    if label is not None and (isinstance(label, bool) or label not in range(10)):
        reader.fail("serve.sample_label", f"must be a digit 0-9, got {label!r}")
    if label is None and image is not None:
        digits = re.findall(r"(?<![0-9])([0-9])(?![0-9])", image.stem)
        label = int(digits[-1]) if digits else None
    return image, label, warnings


class _ManifestReader:
    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root.resolve()

    def fail(self, key: str, problem: str) -> None:
        raise ManifestError(f"{self.path}: {key}: {problem}")

    def only_keys(self, table: dict[str, Any], parent: str, allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            where = f"{parent}.{unknown[0]}" if parent else unknown[0]
            self.fail(where, f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def section(self, data: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            self.fail(name, f"must be a table ([{name}]), got {value!r}")
        self.only_keys(value, name, allowed)
        return value

    def string(self, table: dict[str, Any], key: str, default: str) -> str:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def optional_string(self, table: dict[str, Any], key: str) -> str | None:
        if key.rsplit(".", 1)[-1] not in table:
            return None
        return self.string(table, key, "")

    def file_name(self, table: dict[str, Any], key: str, default: str) -> str:
        value = self.string(table, key, default)
        if not value or "/" in value or value in {".", ".."}:
            self.fail(key, f"must be a plain file name, got {value!r}")
        return value

    def relative(self, table: dict[str, Any], key: str, default: str) -> str:
        value = self.string(table, key, default)
        parts = Path(value).parts
        if not value or Path(value).is_absolute() or ".." in parts:
            self.fail(key, f"must be a relative path inside the context, got {value!r}")
        return value

    def inside(self, value: str, key: str, base: Path | None = None) -> Path:
        """`value` resolved against `base` (default: the submission); it must stay inside."""
        if not value:
            self.fail(key, "must not be empty")
        resolved = ((base or self.root) / value).resolve()
        if not resolved.is_relative_to(self.root):
            self.fail(key, f"{value!r} leaves the submission folder; use a path inside it")
        return resolved

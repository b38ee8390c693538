"""Submissions: finding them on disk and reading their optional `submission.toml`.

Every manifest key has a default (SPEC section 2), so a folder with `train/Dockerfile` is a
complete submission, and so is the lab repository's own flat layout (`Dockerfile.gpu`,
`Dockerfile.infer.gpu`, ... at the top). Every path the harness takes from a submission is
resolved and must stay inside it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.domain.errors import ManifestError
from grader.domain.intake import is_archive

MANIFEST = "submission.toml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_MANIFEST_BYTES = 100_000

# Where each half's Dockerfile is looked for without a manifest key, by rank (SPEC section 2):
# the harness's own folders, then the lab repository's names, then common variants. Within a
# rank, a tuple lists files by preference (GPU before CPU); two entries that both exist in one
# rank are ambiguous unless they share a tuple.
LAYOUTS: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "train": (
        (("train/Dockerfile",),),
        (("Dockerfile.gpu", "Dockerfile.cpu"),),
        (("train.Dockerfile",), ("Dockerfile.train",), ("training/Dockerfile",)),
    ),
    "serve": (
        (("serve/Dockerfile",),),
        (("Dockerfile.infer.gpu", "Dockerfile.infer.cpu"),),
        (
            ("serve.Dockerfile",),
            ("Dockerfile.serve",),
            ("Dockerfile.infer",),
            ("inference/Dockerfile",),
        ),
    ),
}
HALF_NAMES = {"train": "training", "serve": "inference"}


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
    """A folder with a manifest, `train/` or `serve/`, or a Dockerfile of a known layout.

    A folder that cannot be looked into counts: intake then refuses it with the reason, rather
    than a hand-in going missing from the results without a word.
    """
    try:
        if not path.is_dir():
            return False
        if any((path / name).exists() for name in (MANIFEST, "train", "serve")):
            return True
        return any(
            (path / name).is_file()
            for ranks in LAYOUTS.values()
            for rank in ranks
            for names in rank
            for name in names
        )
    except PermissionError:
        return True
    except OSError:
        return False


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
        try:
            children = (
                sorted(p for p in path.iterdir() if is_submission_dir(p) or is_archive(p))
                if path.is_dir()
                else []
            )
        except OSError as error:
            raise ManifestError(f"{path}: cannot be read ({error.strerror or error})") from None
        if not children:
            raise ManifestError(
                f"{path}: not a submission (no {MANIFEST}, train/ or serve/, no Dockerfile.gpu "
                "or Dockerfile.infer.gpu or the like, not a .zip or .tar.gz) and holds none"
            )
        found.extend(child.resolve() for child in children)
    return found


def load_submission(root: Path, default_id: str | None = None) -> Submission:
    """Read a submission folder; ManifestError names the file, the key and the fix.

    Without `student.id` the id is `default_id`, or the folder's name.
    """
    root = root.resolve()
    manifest_path = root / MANIFEST
    data: dict[str, Any] = {}
    if manifest_path.is_symlink() and not manifest_path.resolve().is_relative_to(root):
        raise ManifestError(
            f"{manifest_path}: a link that leads out of the submission folder; hand in the file "
            "itself"
        )
    if manifest_path.is_file():
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{manifest_path}: larger than {MAX_MANIFEST_BYTES // 1000} kB; a manifest holds "
                "a few keys"
            )
        try:
            data = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ManifestError(f"{manifest_path}: not valid TOML ({error})") from None
        except RecursionError:
            raise ManifestError(
                f"{manifest_path}: nested too deeply to read; a manifest holds a few keys"
            ) from None
    reader = _ManifestReader(manifest_path, root)
    reader.only_keys(data, "", {"student", "train", "serve"})
    student = reader.section(data, "student", {"id", "name"})
    train = reader.section(data, "train", {"context", "dockerfile", "command", "model_file"})
    serve = reader.section(
        data,
        "serve",
        {"context", "dockerfile", "model_name", "model_path", "sample_image", "sample_label"},
    )
    submission_id = reader.string(student, "student.id", default_id or root.name)
    if not submission_id.strip():
        reader.fail("student.id", "must not be empty")

    warnings: list[str] = []
    train_context, train_dockerfile = _half(reader, train, "train", warnings)
    serve_context, serve_dockerfile = _half(reader, serve, "serve", warnings)
    command = train.get("command", [])
    if not isinstance(command, list) or not all(isinstance(w, str) for w in command):
        reader.fail("train.command", f"must be a list of strings, got {command!r}")

    sample_image, sample_label = _sample(reader, serve, serve_context, warnings)
    return Submission(
        id=submission_id.strip(),
        root=root,
        student_name=reader.optional_string(student, "student.name"),
        train=TrainSpec(
            context=train_context,
            dockerfile=train_dockerfile,
            command=tuple(command),
            model_file=reader.file_name(train, "train.model_file", "mnist_cnn.pt"),
        ),
        serve=ServeSpec(
            context=serve_context,
            dockerfile=serve_dockerfile,
            model_name=reader.string(serve, "serve.model_name", "mnist"),
            model_path=reader.relative(serve, "serve.model_path", "mnist_cnn.pt"),
            sample_image=sample_image,
            sample_label=sample_label,
        ),
        warnings=tuple(warnings),
    )


def _half(
    reader: _ManifestReader, table: dict[str, Any], half: str, warnings: list[str]
) -> tuple[Path, Path]:
    """The build context and Dockerfile of one half: from the manifest, else found by layout."""
    context_key, dockerfile_key = f"{half}.context", f"{half}.dockerfile"
    if "context" in table or ("dockerfile" in table and (reader.root / half).is_dir()):
        context = reader.inside(reader.string(table, context_key, half), context_key)
        dockerfile = reader.inside(
            reader.string(table, dockerfile_key, "Dockerfile"), dockerfile_key, base=context
        )
        return context, dockerfile
    if "dockerfile" in table:  # no context given: the folder holding the Dockerfile
        named = reader.string(table, dockerfile_key, "")
        dockerfile = reader.inside(named, dockerfile_key)
        return reader.inside(str(Path(named).parent), dockerfile_key), dockerfile
    found = _find_dockerfile(reader.root, half)
    if found is None:  # nothing of any layout: the default, reported missing by the checks
        context = reader.inside(half, context_key)
        return context, context / "Dockerfile"
    name, passed_over = found
    context = reader.inside(str(Path(name).parent), context_key)
    preferred = f" (preferred over {', '.join(passed_over)})" if passed_over else ""
    if name != f"{half}/Dockerfile":
        where = "the submission folder" if context == reader.root else f"{Path(name).parent}/"
        warnings.append(
            f"no {half}/Dockerfile: the {HALF_NAMES[half]} image is built from {name}{preferred} "
            f"with {where} as build context; set {dockerfile_key} in {MANIFEST} to choose "
            "another file"
        )
    elif passed_over:
        warnings.append(
            f"the {HALF_NAMES[half]} image is built from {name}{preferred}; set "
            f"{dockerfile_key} in {MANIFEST} to choose another file"
        )
    return context, (reader.root / name).resolve()


def _find_dockerfile(root: Path, half: str) -> tuple[str, list[str]] | None:
    """The first rank of `LAYOUTS[half]` holding a Dockerfile: its name and the names it was
    preferred over (of its rank and later ones); ManifestError when two files of that rank
    could be meant."""
    for index, rank in enumerate(LAYOUTS[half]):
        found = [
            present
            for names in rank
            if (present := [name for name in names if _file_inside(root, root / name)])
        ]
        if len(found) > 1:
            first, second = found[0][0], found[1][0]
            raise ManifestError(
                f"{root}: both {first} and {second} could be the {HALF_NAMES[half]} "
                f'Dockerfile; say which in {MANIFEST}, e.g. [{half}] dockerfile = "{first}"'
            )
        if found:
            later = [
                name
                for names in (n for r in LAYOUTS[half][index + 1 :] for n in r)
                for name in names
                if _file_inside(root, root / name)
            ]
            return found[0][0], found[0][1:] + later
    return None


def _file_inside(root: Path, path: Path) -> bool:
    """`path` is, or leads to, a regular file inside `root` (links out of it never count)."""
    resolved = path.resolve()
    return resolved.is_relative_to(root) and resolved.is_file()


def _sample(
    reader: _ManifestReader, serve: dict[str, Any], context: Path, warnings: list[str]
) -> tuple[Path | None, int | None]:
    """The student's own digit image and its label (from the manifest or the file name)."""
    if "sample_image" in serve:
        named = reader.string(serve, "serve.sample_image", "")
        image = reader.inside(named, "serve.sample_image", base=context)
        name = Path(named).stem
    else:
        found = _find_sample(reader.root, context, warnings)
        image, name = (found[0], found[1].stem) if found else (None, "")
    label = serve.get("sample_label")
    if label is not None and (isinstance(label, bool) or label not in range(10)):
        reader.fail("serve.sample_label", f"must be a digit 0-9, got {label!r}")
    if label is None and image is not None:
        digits = re.findall(r"(?<![0-9])([0-9])(?![0-9])", name)
        label = int(digits[-1]) if digits else None
    return image, label


def _find_sample(root: Path, context: Path, warnings: list[str]) -> tuple[Path, Path] | None:
    """The digit image (its resolved path and the name it was found under) in the serve context.

    An image whose name carries one digit (`digit_7.png`, `7.png`) is the student's digit; in a
    folder of its own (`serve/`) any image will do when none does, but next to the rest of the
    hand-in (the flat layout) other images are screenshots and the like, never the digit.
    """
    images = _images(root, context)
    digits = [image for image in images if _names_a_digit(image)]
    candidates = digits if digits or context == root else images
    if not candidates and context != root:
        candidates = [image for image in _images(root, root) if _names_a_digit(image)]
    if not candidates:
        return None
    chosen = candidates[0]
    if len(candidates) > 1:
        where = "the submission folder" if chosen.parent == root else f"{chosen.parent.name}/"
        warnings.append(
            f"several images in {where}; using {chosen.name} (set serve.sample_image to choose)"
        )
    return (chosen.resolve(), chosen)


def _images(root: Path, folder: Path) -> list[Path]:
    """Image files right in `folder` that are, or lead to, regular files inside `root`."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and _file_inside(root, path)
    )


def _names_a_digit(image: Path) -> bool:
    return [len(run) for run in re.findall(r"[0-9]+", image.stem)] == [1]


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

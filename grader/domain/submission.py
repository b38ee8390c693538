"""Submissions: finding them on disk and reading their optional `submission.toml`.

Every manifest key has a default (SPEC section 2), so a folder with `train/Dockerfile` is a
complete submission, and so is the lab repository's own flat layout (`Dockerfile.gpu`,
`Dockerfile.infer.gpu`, ... at the top). Every path the harness takes from a submission is
resolved and must stay inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec

from grader.domain.config import Invalid, Schema, convert, read_toml
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
Digit = Annotated[int, msgspec.Meta(ge=0, le=9, description="a digit 0-9")]


class StudentTable(Schema, frozen=True):
    id: str | None = None  # None: the folder's (or the archive's) name
    name: str | None = None

    def __post_init__(self) -> None:
        if self.id is not None and not self.id.strip():
            raise Invalid("id", "must not be empty; give your student id or leave the key out")


class TrainTable(Schema, frozen=True):
    context: str | None = None  # None: the folder holding the Dockerfile
    dockerfile: str | None = None  # None: looked for by LAYOUTS
    command: tuple[str, ...] = ()  # empty: the image's own CMD
    model_file: str = "mnist_cnn.pt"  # what training writes to $OUTPUT_DIR

    def __post_init__(self) -> None:
        if not self.model_file or "/" in self.model_file or self.model_file in {".", ".."}:
            raise Invalid("model_file", f"must be a plain file name, got {self.model_file!r}")


class ServeTable(Schema, frozen=True):
    context: str | None = None  # None: the folder holding the Dockerfile
    dockerfile: str | None = None  # None: looked for by LAYOUTS
    model_name: str = "mnist"
    model_path: str = "mnist_cnn.pt"  # where the image expects the trained model, in its context
    sample_image: str | None = None  # None: an image file naming one digit, in the context
    sample_label: Digit | None = None  # None: the digit in the sample image's name

    def __post_init__(self) -> None:
        parts = Path(self.model_path).parts
        if not self.model_path or Path(self.model_path).is_absolute() or ".." in parts:
            raise Invalid(
                "model_path",
                f"must be a relative path inside the context, got {self.model_path!r}",
            )


class Manifest(Schema, frozen=True):
    """`submission.toml`: every key has a default (SPEC section 2)."""

    student: StudentTable = StudentTable()
    train: TrainTable = TrainTable()
    serve: ServeTable = ServeTable()


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
        data = read_toml(manifest_path, ManifestError, what="manifest")
    manifest = convert(data, Manifest, source=manifest_path, error=ManifestError)
    places = _Places(manifest_path, root)
    warnings: list[str] = []
    train_context, train_dockerfile = _half(places, manifest.train, "train", warnings)
    serve_context, serve_dockerfile = _half(places, manifest.serve, "serve", warnings)
    sample_image, sample_label = _sample(places, manifest.serve, serve_context, warnings)
    return Submission(
        id=(manifest.student.id or default_id or root.name).strip(),
        root=root,
        student_name=manifest.student.name,
        train=TrainSpec(
            context=train_context,
            dockerfile=train_dockerfile,
            command=manifest.train.command,
            model_file=manifest.train.model_file,
        ),
        serve=ServeSpec(
            context=serve_context,
            dockerfile=serve_dockerfile,
            model_name=manifest.serve.model_name,
            model_path=manifest.serve.model_path,
            sample_image=sample_image,
            sample_label=sample_label,
        ),
        warnings=tuple(warnings),
    )


def _half(
    places: _Places, table: TrainTable | ServeTable, half: str, warnings: list[str]
) -> tuple[Path, Path]:
    """The build context and Dockerfile of one half: from the manifest, else found by layout."""
    context_key, dockerfile_key = f"{half}.context", f"{half}.dockerfile"
    if table.context is not None or (
        table.dockerfile is not None and (places.root / half).is_dir()
    ):
        context = places.inside(half if table.context is None else table.context, context_key)
        named = "Dockerfile" if table.dockerfile is None else table.dockerfile
        dockerfile = places.inside(named, dockerfile_key, base=context)
        return context, dockerfile
    if table.dockerfile is not None:  # no context given: the folder holding the Dockerfile
        dockerfile = places.inside(table.dockerfile, dockerfile_key)
        return places.inside(str(Path(table.dockerfile).parent), dockerfile_key), dockerfile
    found = _find_dockerfile(places.root, half)
    if found is None:  # nothing of any layout: the default, reported missing by the checks
        context = places.inside(half, context_key)
        return context, context / "Dockerfile"
    name, passed_over = found
    context = places.inside(str(Path(name).parent), context_key)
    preferred = f" (preferred over {', '.join(passed_over)})" if passed_over else ""
    if name != f"{half}/Dockerfile":
        where = "the submission folder" if context == places.root else f"{Path(name).parent}/"
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
    return context, (places.root / name).resolve()


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
    places: _Places, serve: ServeTable, context: Path, warnings: list[str]
) -> tuple[Path | None, int | None]:
    """The student's own digit image and its label (from the manifest or the file name)."""
    image: Path | None
    if serve.sample_image is not None:
        image = places.inside(serve.sample_image, "serve.sample_image", base=context)
        name = Path(serve.sample_image).stem
    else:
        found = _find_sample(places.root, context, warnings)
        image, name = (found[0], found[1].stem) if found else (None, "")
    label = serve.sample_label
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


class _Places:
    """Paths a manifest names, resolved; each must stay inside the submission."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root.resolve()

    def inside(self, value: str, key: str, base: Path | None = None) -> Path:
        """`value` resolved against `base` (default: the submission); it must stay inside."""
        if not value:
            raise ManifestError(f"{self.path}: {key}: must not be empty")
        resolved = ((base or self.root) / value).resolve()
        if not resolved.is_relative_to(self.root):
            raise ManifestError(
                f"{self.path}: {key}: {value!r} leaves the submission folder; use a path inside it"
            )
        return resolved

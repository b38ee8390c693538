from __future__ import annotations

import gzip
import json
import struct

import pytest

from grader.domain.dataset import (
    HIDDEN_FILES,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    Digits,
    decode_idx,
    encode_idx_images,
    encode_idx_labels,
    load_dataset,
    prepare_from_mnist_dir,
    read_digits,
    stratified_split,
    write_dataset,
)
from grader.domain.errors import DatasetError


def digits(count, seed=0):
    pixels = bytes((i * 7 + seed) % 256 for i in range(count * 784))
    return Digits(pixels, bytes(i % 10 for i in range(count)))


# IDX files written byte by byte from the format's definition (yann.lecun.com/exdb/mnist): a
# big-endian 32-bit magic number (0x00000803: unsigned bytes in 3 dimensions, 0x00000801: in 1),
# one big-endian 32-bit size per dimension, then the data row by row.
TWO_PIXELS = bytes(range(256)) * 3 + bytes(784 * 2 - 768)
TWO_IMAGES = (
    b"\x00\x00\x08\x03"  # magic: unsigned bytes, 3 dimensions
    + b"\x00\x00\x00\x02"  # 2 images
    + b"\x00\x00\x00\x1c"  # 28 rows
    + b"\x00\x00\x00\x1c"  # 28 columns
    + TWO_PIXELS
)
TWO_LABELS = b"\x00\x00\x08\x01" + b"\x00\x00\x00\x02" + b"\x07\x03"


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_written_by_hand_are_read(tmp_path, compress):
    suffix = ".gz" if compress else ""
    images = tmp_path / f"images-idx3-ubyte{suffix}"
    labels = tmp_path / f"labels-idx1-ubyte{suffix}"
    images.write_bytes(gzip.compress(TWO_IMAGES) if compress else TWO_IMAGES)
    labels.write_bytes(gzip.compress(TWO_LABELS) if compress else TWO_LABELS)
    read = read_digits(images, labels)
    assert (read.pixels, read.labels, read.count) == (TWO_PIXELS, b"\x07\x03", 2)
    assert read.image(1) == TWO_PIXELS[784:]


def test_idx_files_are_written_as_the_format_defines():
    assert encode_idx_images(TWO_PIXELS, 2) == TWO_IMAGES
    assert encode_idx_labels(b"\x07\x03") == TWO_LABELS


def test_labels_and_images_are_not_taken_for_each_other(tmp_path):
    (tmp_path / "i").write_bytes(TWO_IMAGES)
    (tmp_path / "l").write_bytes(TWO_LABELS)
    with pytest.raises(DatasetError, match="0x00000801 is not that of MNIST images"):
        read_digits(tmp_path / "l", tmp_path / "i")


@pytest.mark.parametrize(
    ("data", "magic", "message"),
    [
        (b"\x00\x00", IMAGE_MAGIC, "too short for an IDX header"),
        (struct.pack(">II", LABEL_MAGIC, 1) + b"\x01", IMAGE_MAGIC, "is not that of MNIST images"),
        (struct.pack(">IIII", IMAGE_MAGIC, 1, 32, 32), IMAGE_MAGIC, "images are 32x32"),
        (struct.pack(">II", LABEL_MAGIC, 5) + b"\x01\x02", LABEL_MAGIC, "announces 5 items"),
    ],
)
def test_corrupt_idx_is_explained(data, magic, message):
    with pytest.raises(DatasetError, match=message):
        decode_idx(data, magic, "f")


def test_image_and_label_counts_must_agree(tmp_path):
    images, labels = tmp_path / "i", tmp_path / "l"
    images.write_bytes(encode_idx_images(digits(3).pixels, 3))
    labels.write_bytes(encode_idx_labels(bytes(4)))
    with pytest.raises(DatasetError, match=r"holds 3 images but .* holds 4 labels"):
        read_digits(images, labels)


def test_stratified_split_is_balanced_deterministic_and_disjoint():
    source = digits(200)
    first = stratified_split(source, {"a": 100, "b": 50, "c": 50}, seed=1)
    again = stratified_split(source, {"a": 100, "b": 50, "c": 50}, seed=1)
    assert first == again
    assert sorted(first["b"].labels) == sorted(bytes(i % 10 for i in range(50)))
    all_images = [part.image(i) for part in first.values() for i in range(part.count)]
    assert len(all_images) == 200


def test_write_and_load_dataset(tmp_path):
    dataset = write_dataset(tmp_path / "ds", digits(30), digits(20, 1), digits(10, 2), "unit")
    raw = dataset.visible_dir / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        name + suffix
        for name in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
        for suffix in ("", ".gz")
    )
    assert not list(dataset.visible_dir.rglob("hidden*"))
    assert dataset.counts == {"train": 30, "test": 20, "hidden": 10}
    assert dataset.hidden_digits() == digits(10, 2)
    assert (
        gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())
        == (raw / "t10k-labels-idx1-ubyte").read_bytes()
    )


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"no prepared dataset here.*grader data --force"):
        load_dataset(tmp_path / "nothing")
    dataset = write_dataset(tmp_path / "ds", digits(30), digits(20), digits(10), "unit")
    hidden_labels = dataset.hidden_dir / HIDDEN_FILES[1]
    hidden_labels.write_bytes(hidden_labels.read_bytes()[:-1])
    with pytest.raises(DatasetError, match=r"announces 10 items .* truncated or corrupt"):
        load_dataset(dataset.root)


def test_checksum_mismatch_is_reported(tmp_path):
    dataset = write_dataset(tmp_path / "ds", digits(30), digits(20), digits(10), "unit")
    train_labels = dataset.visible_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(train_labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10
    train_labels.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="content differs from dataset"):
        load_dataset(dataset.root)


def test_manifest_layout_mismatch(tmp_path):
    dataset = write_dataset(tmp_path / "ds", digits(30), digits(20), digits(10), "unit")
    manifest = json.loads((dataset.root / "dataset.json").read_text())
    manifest["layout"] = 99
    (dataset.root / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="layout 99 is not 1"):
        load_dataset(dataset.root)


def test_prepare_from_an_mnist_dir_splits_the_test_set(tmp_path):
    source = tmp_path / "mnist" / "MNIST" / "raw"
    source.mkdir(parents=True)
    train, test = digits(60), digits(40, 3)
    (source / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(encode_idx_images(train.pixels, train.count))
    )
    (source / "train-labels-idx1-ubyte").write_bytes(encode_idx_labels(train.labels))
    (source / "t10k-images-idx3-ubyte").write_bytes(encode_idx_images(test.pixels, test.count))
    (source / "t10k-labels-idx1-ubyte").write_bytes(encode_idx_labels(test.labels))
    dataset = prepare_from_mnist_dir(tmp_path / "full", tmp_path / "mnist", hidden=10)
    assert dataset.counts == {"train": 60, "test": 30, "hidden": 10}


def test_prepare_from_a_folder_without_mnist(tmp_path):
    with pytest.raises(DatasetError, match="no MNIST files found"):
        prepare_from_mnist_dir(tmp_path / "full", tmp_path)

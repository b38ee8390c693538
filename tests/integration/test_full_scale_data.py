"""`grader data --mnist-dir` at MNIST's full scale (60,000 + 10,000 digits in IDX format).

Debian's `dataset-fashion-mnist` ships Fashion-MNIST in exactly MNIST's file layout and format,
so it stands in for a real MNIST copy here; it is installed when missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.domain.dataset import PIXELS, load_dataset, read_digits
from grader.domain.settings import Settings
from grader.engine.daemon import apt_install
from tests.cli import run_grader

pytestmark = pytest.mark.integration

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def mnist_dir():
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        apt_install(["dataset-fashion-mnist"], Settings.from_env())
    return FASHION


def test_grader_data_from_a_full_mnist_copy(mnist_dir, tmp_path):
    done = run_grader(
        "data",
        "--profile",
        "full",
        "--mnist-dir",
        str(mnist_dir),
        env={"GRADER_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert "{'train': 60000, 'test': 5000, 'hidden': 5000}" in done.stdout
    dataset = load_dataset(tmp_path / "datasets" / "full")
    raw = dataset.visible_dir / "MNIST" / "raw"
    train = read_digits(raw / "train-images-idx3-ubyte.gz", raw / "train-labels-idx1-ubyte.gz")
    source = read_digits(
        mnist_dir / "train-images-idx3-ubyte.gz", mnist_dir / "train-labels-idx1-ubyte.gz"
    )
    assert train == source  # the training split is the whole training set, unchanged
    hidden = dataset.hidden_digits()
    test = read_digits(raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte")
    assert sorted(hidden.labels).count(0) == 500  # balanced: 500 of each class
    visible_images = {test.image(i) for i in range(test.count)}
    overlap = sum(hidden.image(i) in visible_images for i in range(hidden.count))
    assert overlap < 5 and len(hidden.pixels) == 5000 * PIXELS  # no test digit is also hidden


def test_a_partial_copy_is_refused(mnist_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz"):  # fmt: skip
        (partial / name).symlink_to(mnist_dir / name)
    done = run_grader(
        "data",
        "--profile",
        "full",
        "--mnist-dir",
        str(partial),
        env={"GRADER_HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert f"{partial}: no MNIST files found" in done.stderr

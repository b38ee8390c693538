"""Submissions for tests, written from the reference solution with a few changes."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.cli import ROOT

SERVE_FILES = ("Dockerfile", "config.properties", "model.py", "handler.py", "digit_7.png")
REFERENCE_SERVE = ROOT / "reference" / "serve"
COMMITTED_MODEL = ROOT / "submissions" / "serve-token-auth" / "serve" / "mnist_cnn.pt"


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_serve_variant(submission: Path, changes: dict[str, tuple[str, str]]) -> None:
    """The reference's serve half with the committed model, each `file: (old, new)` applied."""
    serve = submission / "serve"
    serve.mkdir(parents=True)
    for name in SERVE_FILES:
        data = (REFERENCE_SERVE / name).read_bytes()
        if name in changes:
            old, new = changes[name]
            assert old.encode() in data, f"{name} has no {old!r}"
            data = data.replace(old.encode(), new.encode())
        (serve / name).write_bytes(data)
    shutil.copyfile(COMMITTED_MODEL, serve / "mnist_cnn.pt")

"""The reference solution's two halves must agree on the model they share."""

from __future__ import annotations

from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "reference"


def test_serve_model_definition_is_the_trained_one():
    trained = (REFERENCE / "train" / "model.py").read_text()
    assert (REFERENCE / "serve" / "model.py").read_text() == trained


def test_sample_digit_is_named_with_its_label():
    assert [p.name for p in (REFERENCE / "serve").glob("*.png")] == ["digit_7.png"]

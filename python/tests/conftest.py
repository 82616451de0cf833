"""Shared fixtures: the repository's tiny checkpoint, its goldens and test images."""

import json
from pathlib import Path

import pytest

import biomedclip

FIXTURES = Path(__file__).resolve().parents[2] / "crates/biomedclip/tests/fixtures"
MODEL_DIR = FIXTURES / "tiny-model"
IMAGES = FIXTURES / "images"


@pytest.fixture(scope="session")
def golden():
    return json.loads((FIXTURES / "golden/golden.json").read_text())


@pytest.fixture(scope="session")
def model():
    # The reference clamps 16-bit grayscale at 255; the goldens were made that way.
    return biomedclip.load(MODEL_DIR, reference_16bit=True)

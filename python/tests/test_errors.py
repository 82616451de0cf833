"""Errors arrive as exceptions carrying the library's messages; a batch finishes the rest."""

import shutil

import numpy as np
import pytest

import biomedclip
from conftest import IMAGES, MODEL_DIR


def test_missing_and_corrupt_images_are_reported_and_the_rest_computed(model):
    good = IMAGES / "ihc.jpg"
    with pytest.raises(biomedclip.ImageError) as info:
        model.encode_images(["/nonexistent/scan.png", good, IMAGES / "not_an_image.png"])
    err = info.value
    message = str(err)
    assert "2 of 3" in message
    assert "/nonexistent/scan.png" in message and "No such file" in message
    assert "not_an_image.png" in message and "unrecognised image format" in message
    assert [i for i, _ in err.failures] == [0, 2]
    assert np.isnan(err.partial[0]).all() and np.isnan(err.partial[2]).all()
    assert np.abs(err.partial[1] - model.encode_images([good])[0]).max() <= 1e-6
    assert isinstance(err, biomedclip.BiomedClipError)


def test_corrupt_bytes_name_their_position(model):
    with pytest.raises(biomedclip.ImageError, match=r"images\[0\]"):
        model.encode_images([b"\x89PNG\r\n\x1a\n truncated"])


def test_classify_reports_unreadable_images(model):
    with pytest.raises(biomedclip.ImageError) as info:
        model.classify([IMAGES / "ihc.jpg", "missing.png"], ["a", "b"])
    assert info.value.partial[1] is None
    assert [s["label"] for s in info.value.partial[0]["scores"]] != []


def test_bad_labels_are_refused(model):
    with pytest.raises(biomedclip.TextError, match="more than once"):
        model.classify([IMAGES / "ihc.jpg"], ["a", "a"])
    with pytest.raises(biomedclip.TextError, match="no labels"):
        model.classify([IMAGES / "ihc.jpg"], [])


def test_bad_model_directories(tmp_path):
    with pytest.raises(biomedclip.ModelError, match="has no model config"):
        biomedclip.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(MODEL_DIR, broken)
    (broken / "open_clip_config.json").write_text("{not json")
    with pytest.raises(biomedclip.ModelError, match="open_clip_config.json"):
        biomedclip.load(broken)


def test_bad_options():
    with pytest.raises(ValueError, match="precision"):
        biomedclip.load(MODEL_DIR, precision="fp8")
    with pytest.raises(ValueError, match="window"):
        biomedclip.load(MODEL_DIR, window="nonsense")

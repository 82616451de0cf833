"""Every kind of image input gives the same embedding as the file it came from."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import biomedclip
from conftest import FIXTURES, IMAGES, MODEL_DIR


def test_every_input_kind_agrees(model):
    path = IMAGES / "rgb_photo.png"
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    kinds = [str(path), path, path.read_bytes(), bytearray(path.read_bytes()),
             memoryview(path.read_bytes()), pil, array, np.asfortranarray(array)]
    embeddings = model.encode_images(kinds)
    for i, row in enumerate(embeddings[1:], 1):
        assert np.abs(row - embeddings[0]).max() <= 1e-6, type(kinds[i]).__name__


def test_grayscale_and_rgba_arrays_convert_as_pillow_does(model):
    gray = np.asarray(Image.open(IMAGES / "gray.png"))
    assert gray.ndim == 2
    a, b = model.encode_images([gray, np.dstack([gray] * 3)])
    assert np.abs(a - b).max() <= 1e-6
    rgba = np.asarray(Image.open(IMAGES / "rgba.png"))
    a, b = model.encode_images([rgba, np.ascontiguousarray(rgba[:, :, :3])])
    assert np.abs(a - b).max() <= 1e-6


def test_dicom_is_read_and_rendered(model):
    dicom, rendered = model.encode_images([
        FIXTURES / "dicom/CT_small.dcm", FIXTURES / "golden/dicom/CT_small.png"])
    cosine = float(dicom @ rendered)
    assert cosine >= 0.99999, cosine


def test_single_items_and_texts(model):
    assert model.encode_images(str(IMAGES / "gray.png")).shape == (1, model.embed_dim)
    assert model.encode_texts("chest X-ray").shape == (1, model.embed_dim)
    assert model.encode_images([]).shape == (0, model.embed_dim)


def test_embeddings_are_unit_rows_owned_by_numpy(model):
    e = model.encode_images([IMAGES / "gray.png", IMAGES / "ihc.jpg"])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e.flags["C_CONTIGUOUS"] and e.flags["WRITEABLE"]
    t = model.encode_texts(["a", "b"])
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)


def test_attributes(model):
    assert model.embed_dim == 32 and model.image_size == 224
    assert model.precision == "f32"
    assert Path(model.source) == MODEL_DIR
    assert "embed_dim=32" in repr(model)
    int8 = biomedclip.load(MODEL_DIR, precision="int8")
    assert int8.precision == "int8"
    e = int8.encode_images([IMAGES / "ihc.jpg"])
    ref = model.encode_images([IMAGES / "ihc.jpg"])
    assert float(e[0] @ ref[0]) >= 0.99


@pytest.mark.parametrize("bad", [3.5, np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8)])
def test_unsupported_inputs_name_the_item(model, bad):
    with pytest.raises(TypeError, match=r"images\[1\]"):
        model.encode_images([IMAGES / "gray.png", bad])

"""Embeddings against the reference's goldens, with the Rust tests' tolerances
(cosine >= 0.99999, max |diff| <= 1e-4)."""

import numpy as np

from conftest import FIXTURES, IMAGES


def assert_close(ours, reference, what):
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    cosine = ours @ reference / (np.linalg.norm(ours) * np.linalg.norm(reference))
    diff = np.abs(ours - reference).max()
    assert cosine >= 0.99999 and diff <= 1e-4, f"{what}: cosine {cosine:.7f}, max diff {diff:.2e}"


def test_images_match_the_reference(model, golden):
    paths = [str(IMAGES / e["file"]) for e in golden["images"]]
    embeddings = model.encode_images(paths)
    assert embeddings.shape == (len(paths), model.embed_dim)
    assert embeddings.dtype == np.float32
    for row, entry in zip(embeddings, golden["images"]):
        assert_close(row, entry["embedding"], entry["file"])


def test_texts_match_the_reference(model, golden):
    texts = [t["text"] for t in golden["texts"]]
    embeddings = model.encode_texts(texts)
    for row, entry in zip(embeddings, golden["texts"]):
        assert_close(row, entry["embedding"], repr(entry["text"]))
    ids = model.tokenize(texts)
    for row, entry in zip(ids, golden["texts"]):
        assert list(row[: len(entry["ids"])]) == entry["ids"]


def test_zero_shot_probabilities_match(model, golden):
    labels = golden["labels"]
    entry = golden["images"][0]
    result = model.classify([str(IMAGES / entry["file"])], labels, template=golden["template"])
    probabilities = {s["label"]: s["probability"] for s in result[0]["scores"]}
    reference = dict(zip(labels, entry["probabilities"]))
    for label in labels:
        assert abs(probabilities[label] - reference[label]) <= 1e-4, label
    ranked = [s["probability"] for s in result[0]["scores"]]
    assert ranked == sorted(ranked, reverse=True)
    assert abs(model.logit_scale - golden["logit_scale"]) <= 1e-4 * golden["logit_scale"]


def test_open_clip_shaped_entry_point(golden):
    import biomedclip

    model, preprocess = biomedclip.create_model_from_pretrained(str(FIXTURES / "tiny-model"))
    tokenizer = biomedclip.get_tokenizer(str(FIXTURES / "tiny-model"))
    entry = golden["images"][0]
    pixels = preprocess(str(IMAGES / entry["file"]))
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert_close(model.encode_image(np.stack([pixels]))[0], entry["embedding"], "encode_image")
    texts = [t["text"] for t in golden["texts"][:4]]
    ids = tokenizer(texts)
    assert ids.shape == (4, 256) and ids.dtype == np.int64
    for row, t in zip(model.encode_text(ids), golden["texts"][:4]):
        assert_close(row, t["embedding"], repr(t["text"]))

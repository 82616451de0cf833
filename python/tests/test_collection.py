"""Collections written by `biomedclip index build` read back with NumPy and pyarrow, as
clip-retrieval and autofaiss read them: the npy files are C-order `<f4`/`<f2` matrices equal
to the Python package's embeddings of the same files, the Parquet rows name those files."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import biomedclip
from conftest import IMAGES, MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "target/release/biomedclip"
NAMES = ["rgb_photo.jpg", "gray_cells.jpg", "ihc.jpg", "retina.bmp", "small.png", "tall.jpg", "rgb.tif"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name in NAMES:
        shutil.copy(IMAGES / name, folder / name)
    return folder


def build(folder: Path, out: Path, *extra: str) -> dict:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: build it with `cargo build --release` first")
    done = subprocess.run(
        [str(CLI), "index", "build", "--model", str(MODEL_DIR), "--out", str(out), "--part-size", "3", *extra, str(folder)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("dtype, numpy_dtype, tolerance", [("f32", "<f4", 1e-6), ("f16", "<f2", 2e-3)])
def test_npy_and_parquet_read_back(images, tmp_path, dtype, numpy_dtype, tolerance):
    manifest = build(images, tmp_path / "col", "--dtype", dtype)
    assert manifest["dtype"] == dtype and manifest["dim"] == 32 and manifest["rows"] == len(NAMES)
    parts = [p["part"] for p in manifest["parts"]]
    assert parts == [0, 1, 2]

    matrices = [np.load(tmp_path / f"col/img_emb/img_emb_{n}.npy") for n in parts]
    for m in matrices:
        assert m.dtype == np.dtype(numpy_dtype) and m.flags["C_CONTIGUOUS"] and m.ndim == 2
    embeddings = np.concatenate(matrices).astype(np.float32)
    tables = [pq.read_table(tmp_path / f"col/metadata/metadata_{n}.parquet") for n in parts]
    assert [t.num_rows for t in tables] == [m.shape[0] for m in matrices]
    rows = [row for t in tables for row in t.to_pylist()]
    assert tables[0].column_names[:4] == ["image_path", "blake3", "size", "modality"]

    paths = [r["image_path"] for r in rows]
    assert sorted(Path(p).name for p in paths) == sorted(NAMES)
    for r in rows:
        assert r["size"] == Path(r["image_path"]).stat().st_size
        assert len(r["blake3"]) == 64 and r["modality"] is None

    expected = biomedclip.load(MODEL_DIR).encode_images(paths)
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=tolerance)
    # pyarrow reads the whole folder as one dataset, clip-retrieval's way.
    assert pq.read_table(tmp_path / "col/metadata").num_rows == len(NAMES)

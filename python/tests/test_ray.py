"""The Ray recipe of docs/python.md on a local two-CPU cluster: a Parquet list of paths in,
Parquet with an embedding per row out, equal to the package's and the CLI's embeddings."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, IMAGES, MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]
if os.environ.get("BIOMEDCLIP_REQUIRE_RAY"):
    import ray  # noqa: F401  (CI installs it: fail, do not skip, when it is missing)
ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAMES = ["ihc.jpg", "gray.png", "rgb_photo.png", "retina.bmp", "palette.tif", "cmyk.jpg",
         "not_an_image.png"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    import biomedclip.ray

    tmp = tmp_path_factory.mktemp("ray")
    paths = [str(IMAGES / n) for n in NAMES] + [str(FIXTURES / "dicom/CT_small.dcm")]
    pq.write_table(pa.table({"path": paths}), tmp / "paths.parquet")
    # Two CPUs, one actor of one CPU: the read task keeps the other (an actor on every CPU
    # leaves the read waiting forever).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.read_parquet(str(tmp / "paths.parquet"))
        ds = ds.map_batches(
            biomedclip.ray.Embedder,
            fn_constructor_kwargs={"model": str(MODEL_DIR), "column": "path"},
            batch_size=3, concurrency=1, num_cpus=1, batch_format="numpy",
        )
        ds.write_parquet(str(tmp / "out"))
    finally:
        ray.shutdown()
    table = pq.read_table(str(tmp / "out")).to_pydict()
    order = np.argsort(table["path"])
    rows = {table["path"][i]: (np.asarray(table["embedding"][i], np.float32), table["error"][i])
            for i in order}
    return paths, rows


def test_every_path_comes_back_once_with_its_embedding_or_error(recipe):
    import biomedclip

    paths, rows = recipe
    assert sorted(rows) == sorted(paths)
    model = biomedclip.load(MODEL_DIR)
    good = [p for p in paths if not p.endswith("not_an_image.png")]
    expected = model.encode_images(good)
    for p, e in zip(good, expected):
        embedding, error = rows[p]
        assert error == "", (p, error)
        assert np.abs(embedding - e).max() <= 1e-6, p
    bad_embedding, bad_error = rows[str(IMAGES / "not_an_image.png")]
    assert np.isnan(bad_embedding).all() and "unrecognised image format" in bad_error


def test_ray_embeddings_equal_the_cli(recipe):
    cli = Path(os.environ.get("BIOMEDCLIP_CLI", ROOT / "target/release/biomedclip"))
    if not cli.exists():
        pytest.skip(f"{cli} not built (cargo build --release)")
    paths, rows = recipe
    good = [p for p in paths if not p.endswith("not_an_image.png")]
    args = [str(cli), "embed", "--model", str(MODEL_DIR)]
    for p in good:
        args += ["--image", p]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(good)
    for line in lines:
        ours = np.asarray(line["embedding"], np.float32)
        assert np.abs(rows[line["input"]][0] - ours).max() <= 1e-6, line["input"]

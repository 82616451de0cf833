"""Batch embedding on Ray Data: the model loaded once per actor, images in, an
``embedding`` column out.

    import ray, biomedclip.ray
    ds = ray.data.read_parquet("paths.parquet")          # a column "path" (or "bytes")
    ds = ds.map_batches(
        biomedclip.ray.Embedder,
        fn_constructor_kwargs={"model": "/models/biomedclip", "column": "path"},
        batch_size=32, concurrency=4, num_cpus=2,        # 4 actors of 2 cores each
    )
    ds.write_parquet("embeddings/")

Each output row keeps its input columns and gains ``embedding`` (float32, ``embed_dim``
long, L2-normalised) and ``error`` (empty, or why that image could not be read: its
embedding is then NaN). Nothing is dropped silently.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

import biomedclip


class Embedder:
    """A callable class for ``ray.data.Dataset.map_batches`` (``batch_format="numpy"``)."""

    def __init__(
        self,
        model: Optional[str] = None,
        column: str = "path",
        precision: str = "f32",
        threads: Optional[int] = None,
    ) -> None:
        self.model = biomedclip.load(model, precision=precision, threads=threads)
        self.column = column

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
        items = [
            item.decode() if isinstance(item, bytes) and self.column == "path" else item
            for item in batch[self.column]
        ]
        errors = [""] * len(items)
        try:
            embeddings = self.model.encode_images(items)
        except biomedclip.ImageError as e:
            embeddings = e.partial
            for index, message in e.failures:
                errors[index] = message
        out = dict(batch)
        out["embedding"] = embeddings
        out["error"] = np.array(errors, dtype=object)
        return out

"""BiomedCLIP embeddings and zero-shot classification on a Rust engine.

BiomedCLIP (ViT-B/16 + PubMedBERT, Microsoft) maps biomedical images and texts into one
embedding space. This package runs it without PyTorch, with the numbers of the reference
(open_clip 2.23.0) and the GIL released while the engine works::

    import biomedclip
    model = biomedclip.load()                 # the Hub model, or a local directory
    img = model.encode_images(["a.png", "scan.dcm"])   # (n, 512) float32, L2-normalised
    txt = model.encode_texts(["chest X-ray"])           # (n, 512) float32, L2-normalised
    res = model.classify(["a.png"], ["chest X-ray", "brain MRI"])

BiomedCLIP is a research model: as its model card says, it is meant for research only, not
for clinical use or any clinical decision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from . import _native
from ._native import (
    DEFAULT_MODEL,
    DEFAULT_TEMPLATE,
    BiomedClipError,
    ImageError,
    ModelError,
    TextError,
    __version__,
)

__all__ = [
    "load",
    "Model",
    "BiomedClipError",
    "ImageError",
    "ModelError",
    "TextError",
    "DEFAULT_MODEL",
    "DEFAULT_TEMPLATE",
    "create_model_from_pretrained",
    "get_tokenizer",
    "__version__",
]

#: What an image can be: a path (``"scan.dcm#frame=N"`` picks a DICOM frame), the bytes of
#: an image file, a PIL image, or a uint8 array of shape (height, width[, 3 or 4]).
ImageLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Any]


def load(
    source: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    precision: str = "f32",
    threads: Optional[int] = None,
    window: Optional[str] = None,
    reference_16bit: bool = False,
) -> "Model":
    """Loads a model.

    ``source`` is a local directory (``open_clip_config.json``, weights, tokenizer files) or
    ``"hf-hub:<repo-id>"``; by default ``$BIOMEDCLIP_MODEL``, else the official checkpoint
    (``DEFAULT_MODEL``, downloaded once into the Hugging Face cache). ``precision`` is the
    image tower's arithmetic: ``"f32"`` (the reference's numbers), ``"bf16"`` or ``"int8"``.
    ``threads`` sizes the engine's thread pool (all cores by default); only the first load
    in a process can set it. ``window`` (``"CENTER,WIDTH"`` or a preset such as ``"lung"``)
    overrides DICOM windows and the full-range mapping of 16-bit images;
    ``reference_16bit=True`` clamps 16-bit grayscale at 255 as the reference does instead.
    Raises :class:`ModelError` naming the file and the reason.
    """
    if source is None:
        source = os.environ.get("BIOMEDCLIP_MODEL") or DEFAULT_MODEL
    return Model(_native.load(os.fspath(source), precision, threads, window, reference_16bit))


def _native_image(image: ImageLike, index: int) -> Any:
    """What the native layer takes: a path string, bytes, or (h, w, 3) uint8 RGB."""
    if isinstance(image, str):
        return image
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray)):
        return image
    if isinstance(image, memoryview):
        return image.tobytes()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"images[{index}]: arrays must be uint8, got {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 4:
            # As Pillow's convert("RGB") does: alpha is dropped, not composited.
            return np.ascontiguousarray(image[:, :, :3])
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        raise TypeError(
            f"images[{index}]: arrays must be (height, width), (height, width, 3) or "
            f"(height, width, 4), got shape {image.shape}"
        )
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    raise TypeError(
        f"images[{index}]: expected a path, bytes, a PIL image or a uint8 array, "
        f"got {type(image).__name__}"
    )


def _images(images: Union[ImageLike, Sequence[ImageLike]]) -> list:
    single = isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike)) or (
        hasattr(images, "convert") and hasattr(images, "mode")
    )
    items = [images] if single else list(images)
    return [_native_image(image, i) for i, image in enumerate(items)]


class Model:
    """A loaded BiomedCLIP model; see :func:`load`.

    Methods release the GIL while the engine runs, so threads may share one model.
    """

    __slots__ = ("_native",)

    def __init__(self, native: "_native.Model") -> None:
        self._native = native

    def encode_images(self, images: Union[ImageLike, Sequence[ImageLike]]) -> np.ndarray:
        """Embeds images: a ``(n, embed_dim)`` float32 array of L2-normalised rows.

        Images that cannot be read raise :class:`ImageError` once the others are done: its
        ``failures`` lists ``(index, message)`` and its ``partial`` holds the array, with NaN
        rows for the failures.
        """
        return self._native.encode_images(_images(images))

    def encode_texts(self, texts: Union[str, Sequence[str]]) -> np.ndarray:
        """Embeds texts (cleaned and tokenized as open_clip does): a ``(n, embed_dim)``
        float32 array of L2-normalised rows."""
        if isinstance(texts, str):
            texts = [texts]
        return self._native.encode_texts(list(texts))

    def classify(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        labels: Sequence[str],
        template: str = DEFAULT_TEMPLATE,
        top_k: Optional[int] = None,
    ) -> list:
        """Zero-shot classification, as the CLI's ``classify --json``: for each image
        ``{"image": name, "scores": [{"label": ..., "probability": ...}, ...]}``, labels
        ranked by ``softmax(logit_scale * image . text)`` over ``template + label``.

        Unreadable images raise :class:`ImageError` after the others are done (``partial``
        holds the list, ``None`` for the failures). For research use only, not clinical use.
        """
        return self._native.classify(_images(images), list(labels), template, top_k)

    def preprocess(self, images: Union[ImageLike, Sequence[ImageLike]]) -> np.ndarray:
        """The reference's preprocessing: ``(n, 3, image_size, image_size)`` float32."""
        return self._native.preprocess(_images(images))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embeds preprocessed pixels (``(n, 3, image_size, image_size)`` float32)."""
        return self._native.encode_pixels(np.ascontiguousarray(pixels, dtype=np.float32))

    def tokenize(self, texts: Union[str, Sequence[str]], context_length: int = 256) -> np.ndarray:
        """Token ids as open_clip's tokenizer gives them: ``(n, context_length)`` int64."""
        if isinstance(texts, str):
            texts = [texts]
        return self._native.tokenize(list(texts), context_length)

    def encode_token_ids(self, ids: np.ndarray) -> np.ndarray:
        """Embeds token ids (``(n, length)`` integers, padded with the pad id)."""
        return self._native.encode_token_ids(np.ascontiguousarray(ids, dtype=np.int64))

    @property
    def logit_scale(self) -> float:
        """``exp`` of the learned temperature (zero-shot logits are ``logit_scale * cos``)."""
        return self._native.logit_scale

    @property
    def embed_dim(self) -> int:
        """Length of the embeddings (512 for BiomedCLIP)."""
        return self._native.embed_dim

    @property
    def image_size(self) -> int:
        """Side of the square image the model sees (224)."""
        return self._native.image_size

    @property
    def precision(self) -> str:
        """Arithmetic of the image tower: ``"f32"``, ``"bf16"`` or ``"int8"``."""
        return self._native.precision

    @property
    def source(self) -> str:
        """Where the model came from."""
        return self._native.source

    def __repr__(self) -> str:
        return repr(self._native)


from .open_clip import create_model_from_pretrained, get_tokenizer  # noqa: E402

"""Type stubs of the native module (the engine); use the `biomedclip` package's API."""

from typing import Any, Optional, Sequence

import numpy as np

DEFAULT_MODEL: str
DEFAULT_TEMPLATE: str
__version__: str

class BiomedClipError(Exception): ...
class ModelError(BiomedClipError): ...
class TextError(BiomedClipError): ...

class ImageError(BiomedClipError):
    failures: list[tuple[int, str]]
    partial: Any

class Model:
    logit_scale: float
    embed_dim: int
    image_size: int
    precision: str
    source: str
    def encode_images(self, images: Sequence[Any]) -> np.ndarray: ...
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    def classify(
        self, images: Sequence[Any], labels: Sequence[str], template: str = ..., top_k: Optional[int] = ...
    ) -> list: ...
    def preprocess(self, images: Sequence[Any]) -> np.ndarray: ...
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...
    def tokenize(self, texts: Sequence[str], context_length: int = ...) -> np.ndarray: ...
    def encode_token_ids(self, ids: np.ndarray) -> np.ndarray: ...

def load(
    source: str,
    precision: str = ...,
    threads: Optional[int] = ...,
    window: Optional[str] = ...,
    reference_16bit: bool = ...,
) -> Model: ...

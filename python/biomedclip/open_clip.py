"""An open_clip-shaped entry point for code written against open_clip.

    model, preprocess = biomedclip.create_model_from_pretrained(
        "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    tokenizer = biomedclip.get_tokenizer(
        "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    images = np.stack([preprocess(Image.open(p)) for p in paths])   # (n, 3, 224, 224)
    image_features = model.encode_image(images)
    text_features = model.encode_text(tokenizer(["chest X-ray", "brain MRI"]))
    logits = model.logit_scale * image_features @ text_features.T

What differs from open_clip: inputs and outputs are NumPy arrays, not torch tensors (no
``.unsqueeze``, ``torch.no_grad`` or ``.to(device)``); ``encode_image``/``encode_text``
always return L2-normalised rows (open_clip's ``normalize=True``; dividing by the norm again
changes nothing); ``model.logit_scale`` is already ``exp``-ed (open_clip's is the log, used
as ``model.logit_scale.exp()``); there is no training, ``state_dict`` or ``visual``/``text``
submodule.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

import biomedclip


class OpenClipModel:
    """``encode_image``/``encode_text`` on NumPy input, as open_clip's model has them."""

    def __init__(self, model: "biomedclip.Model") -> None:
        self.model = model

    def encode_image(self, images: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Embeds preprocessed images, ``(n, 3, 224, 224)`` float32 (a single
        ``(3, 224, 224)`` image is taken as a batch of one)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        return self.model.encode_pixels(images)

    def encode_text(self, ids: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Embeds token ids from :func:`get_tokenizer`'s tokenizer."""
        return self.model.encode_token_ids(np.asarray(ids))

    @property
    def logit_scale(self) -> float:
        """Already ``exp``-ed: the multiplier of cosine similarities."""
        return self.model.logit_scale


def create_model_from_pretrained(
    name: Optional[str] = None, *, precision: str = "f32", threads: Optional[int] = None
) -> tuple:
    """``(model, preprocess)`` as ``open_clip.create_model_from_pretrained`` returns them;
    ``preprocess(image)`` gives the ``(3, 224, 224)`` float32 array the model expects."""
    model = biomedclip.load(name, precision=precision, threads=threads)

    def preprocess(image: Any) -> np.ndarray:
        return model.preprocess([image])[0]

    return OpenClipModel(model), preprocess


class Tokenizer:
    """Callable like open_clip's tokenizer: texts -> ``(n, context_length)`` int64 ids."""

    def __init__(self, model: "biomedclip.Model", context_length: int = 256) -> None:
        self.model = model
        self.context_length = context_length

    def __call__(
        self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None
    ) -> np.ndarray:
        return self.model.tokenize(texts, context_length or self.context_length)


def get_tokenizer(name: Optional[str] = None, context_length: int = 256) -> Tokenizer:
    """A tokenizer for the model ``name`` (loads the model's files; the image tower's
    weights are mapped, not read, until used)."""
    return Tokenizer(biomedclip.load(name), context_length)

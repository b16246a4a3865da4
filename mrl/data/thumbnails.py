"""Thumbnails: small PNGs of images and video frames, stored in the index beside their embeddings so that a
search page (or any client) can show what it found without access to the catalogue's files; and reading them back."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from mrl.errors import MRLError

ITEM_THUMBNAIL_PX = 96  # widest stored item thumbnail; smaller images are kept at their own size


def thumbnail_png(pixels: np.ndarray, size: int = 96) -> bytes:
    """A (C, H, W) uint8 image as a PNG `size` pixels wide (nearest: the model's input stays visible)."""
    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    if image.width != size:
        image = image.resize((size, max(1, round(size * image.height / image.width))), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def item_thumbnails(images: np.ndarray, progress=None) -> list[str]:
    """Base64 PNGs of (N, C, H, W) uint8 items at their own size, or ITEM_THUMBNAIL_PX wide if larger (a 28x28
    Fashion-MNIST item: about 670 bytes of base64). Pages scale them up; storing them upscaled would cost 10x.
    `progress(n)` is called every 1,000 images (about 0.15 s)."""
    size = min(ITEM_THUMBNAIL_PX, images.shape[-1])
    out = []
    for image in images:
        out.append(base64.b64encode(thumbnail_png(image, size)).decode())
        if progress and len(out) % 1000 == 0:
            progress(1000)
    if progress:
        progress(len(out) % 1000)
    return out


class Thumbnails:
    """PNG thumbnails of one collection's rows, read from Milvus by id (one `get` each: a page shows ten at most),
    the most recent 10,000 kept in memory (a few hundred bytes each)."""

    def __init__(self, client, name: str, max_cached: int = 10_000):
        self.client, self.name, self.max_cached = client, name, max_cached
        fields = {f["name"] for f in client.describe_collection(name)["fields"]}
        self.stored = "thumbnail" in fields  # collections promoted without (vectors, retrieval.thumbnails off)
        self._cache: dict[str, bytes] = {}

    def png(self, row_id: str) -> bytes:
        """The row's PNG; MRLError if the collection stores none or the id is unknown."""
        if not self.stored:
            raise MRLError(f"collection {self.name} stores no thumbnails (its items are not images, or it was promoted "
                           "with retrieval.thumbnails off)")
        if row_id not in self._cache:
            rows = self.client.get(self.name, ids=[row_id], output_fields=["thumbnail"])
            if not rows:
                raise MRLError(f"unknown id {row_id!r} in {self.name}")
            if len(self._cache) >= self.max_cached:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            self._cache[row_id] = base64.b64decode(rows[0]["thumbnail"])
        return self._cache[row_id]

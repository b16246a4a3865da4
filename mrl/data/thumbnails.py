"""Thumbnails: small PNGs of images and video frames, stored in the index beside their embeddings so that a
search page (or any client) can show what it found without access to the catalogue's files."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

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

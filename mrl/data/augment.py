"""Footage-like views of a photo: what a handheld camera does to it (zoom and crop, pan, mirror, colour and brightness
shifts, blur, sensor noise, compression). The instance objective pulls two views of one image together, so an
encoder trained on them finds a photo in footage; the supervised objectives use them as label-preserving noise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

MIN_AREA = 0.3  # a view covers 30-100% of the image's area (zoomed in up to ~1.8x)
ASPECT = (3 / 4, 4 / 3)
JPEG_QUALITY = (30, 90)


def crop_box(rng: np.random.Generator, width: int, height: int,
             area_range: tuple[float, float] = (MIN_AREA, 1.0)) -> tuple[float, float, float, float]:
    """A random box covering `area_range` of the image's area, of aspect within ASPECT, anywhere in it."""
    area = rng.uniform(*area_range) * width * height
    aspect = np.exp(rng.uniform(*np.log(ASPECT)))
    w = min(width, np.sqrt(area * aspect))
    h = min(height, np.sqrt(area / aspect))
    x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)  # anywhere: a pan across the image
    return x0, y0, x0 + w, y0 + h


def footage_view(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random view of uint8 (C, H, W) pixels, same shape and dtype."""
    channels, height, width = pixels.shape
    img = Image.fromarray(pixels[0] if channels == 1 else pixels.transpose(1, 2, 0))
    img = img.resize((width, height), Image.Resampling.BILINEAR, box=crop_box(rng, width, height))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    if channels == 3:
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(0, 8), arr.shape)  # sensor noise, grey levels
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=int(rng.integers(*JPEG_QUALITY, endpoint=True)))
    out = np.asarray(Image.open(buffer).convert(img.mode), dtype=np.uint8)
    return out[None] if channels == 1 else out.transpose(2, 0, 1)


def footage_views(x: np.ndarray, views: int, seed: int) -> np.ndarray:
    """uint8 (N, views, C, H, W): `views` views of every image, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return np.stack([np.stack([footage_view(item, rng) for _ in range(views)]) for item in x])

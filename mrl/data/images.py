"""One preprocessing for every image the models see (ingested photos, uploaded queries, video frames): orientation from
EXIF, any mode (grayscale, palette, alpha, 16-bit, CMYK) to the model's channels, then resize of the shorter side
and a centre crop to a square, so training, serving and video embed alike."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images scaled to 0..255 (PIL's own conversion clips them instead)."""
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """`img` as "L" (channels 1) or "RGB" (3); transparency is composited over white, not dropped to black."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in SIXTEEN_BIT:
        img = _eight_bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("L" if channels == 1 else "RGB")


def square_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side resized to `size`, centre cropped to size x size (a square image is only resized)."""
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))


def model_pixels(img: Image.Image, channels: int, size: int) -> np.ndarray:
    """uint8 (C, size, size): what the encoders take."""
    arr = np.array(square_crop(to_mode(img, channels), size), dtype=np.uint8)  # a copy: writable, torch can take it
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

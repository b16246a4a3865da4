"""Filming one photo as a handheld camera would (mrl.video.photo_footage): a crop window that pans and zooms across
it, a few pixels of shake, a brightness drift, sensor noise and sometimes a colour cast; frames as YUV 4:2:0 planes,
two scenes blended over a cross-fade.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from mrl.video.photos import load_photo
from mrl.video.synth_render import _GAUSS

ZOOM = (1.0, 3.0)  # crop = the largest frame-shaped window in the photo / zoom; log-uniform
WORK_SCALE = 1.5  # working photo: its largest window at most 1.5x the frame width (zoom 1 downsamples 1.5x at most)
SHAKE_PX = (0.5, 4.0)  # handheld shake amplitude, output px
GAIN = (0.7, 1.2)  # brightness: a scene ramps between two of these
CAST = 10.0  # colour cast: chroma offsets up to this many levels (of 224), in CAST_SHARE of the scenes
CAST_SHARE = 0.5
NOISE = (1.0, 4.0)  # sensor noise sigma, luma levels; chroma gets half
PAD = 32  # px of margin in a scene's noise bank: each frame takes the bank at a random offset


@dataclass
class _Shot:
    """One scene, ready to render frame by frame: frames first..first+n-1 (a cross-fade's overlap included)."""
    first: int
    y: Image.Image  # working photo, luma plane (L)
    ycc: Image.Image  # working photo at half its size, YCbCr: the chroma planes come from it
    boxes: np.ndarray  # (n, 4) crop box per frame, working-photo px
    luts: np.ndarray  # (n, 3, 256) int16 Y/U/V lookup per frame: brightness, cast and limited range folded in
    weight: np.ndarray  # (n,) cross-fade weight
    noise_y: np.ndarray  # (H + PAD, W + PAD) int16
    noise_c: np.ndarray  # (H/2 + PAD/2, W/2 + PAD/2) int16


@lru_cache(maxsize=64)  # at most ~1.3 MB each (640 px frames): a worker decodes each photo once, not per scene
def _working(path: str, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """The photo at working resolution for frames of `size`, as luma (L) and, at half that size, YCbCr for the
    half-size chroma planes. A 480 px frame cropped from these costs a third of a crop from a 1280 px RGB photo
    (resizing time grows with the source pixels), and zoom 3 upsamples 2x at most."""
    im = load_photo(path)
    w, h = size
    base = min(im.width, im.height * w / h)
    scale = min(1.0, WORK_SCALE * w / base)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    ycc = im.convert("YCbCr")  # JPEG's full-range BT.601; the luts map it to limited range
    return ycc.getchannel(0), ycc.resize((max(1, ycc.width // 2), max(1, ycc.height // 2)), Image.BILINEAR)


def _camera(rng: np.random.Generator, f: np.ndarray, t_s: np.ndarray, photo: tuple[int, int],
            size: tuple[int, int]) -> np.ndarray:
    """(n, 4) crop boxes: a zoom between two levels and a pan through three points, eased over the scene (f = 0..1
    over its own span), plus shake. Boxes stay inside the photo."""
    (pw, ph), (w, h) = photo, size
    base_w = min(pw, ph * w / h)
    fc = np.clip(f, 0, 1)
    ease = fc * fc * (3 - 2 * fc)
    z0, z1 = np.exp(rng.uniform(np.log(ZOOM[0]), np.log(ZOOM[1]), 2))
    cw = base_w / (z0 + (z1 - z0) * ease)
    ch = cw * h / w
    px = np.interp(ease, [0, 0.5, 1], rng.uniform(0, 1, 3))  # window position, 0..1 of its free range
    py = np.interp(ease, [0, 0.5, 1], rng.uniform(0, 1, 3))
    shake = []
    for _ in range(2):  # two slow sways (0.3-3 Hz) and a per-frame jitter, in output px
        hz, phase = rng.uniform(0.3, 3.0, 2), rng.uniform(0, 2 * np.pi, 2)
        sway = np.sin(2 * np.pi * hz[0] * t_s + phase[0]) + 0.5 * np.sin(2 * np.pi * hz[1] * t_s + phase[1])
        shake.append(rng.uniform(*SHAKE_PX) * (sway / 1.5 + 0.3 * rng.standard_normal(len(f))))
    x0 = np.clip(px * (pw - cw) + shake[0] * cw / w, 0, pw - cw)
    y0 = np.clip(py * (ph - ch) + shake[1] * ch / h, 0, ph - ch)
    return np.stack([x0, y0, x0 + cw, y0 + ch], axis=1)


def _luts(rng: np.random.Generator, f: np.ndarray) -> np.ndarray:
    """(n, 3, 256) int16: full-range YCbCr -> limited-range YUV with this scene's brightness ramp (which scales the
    chroma too: a dimmer picture is less saturated) and colour cast."""
    g0, g1 = rng.uniform(*GAIN, 2)
    gain = (g0 + (g1 - g0) * np.clip(f, 0, 1))[:, None]
    black = rng.uniform(-6, 6)  # black level, luma levels
    cast = rng.uniform(-CAST, CAST, 2) if rng.random() < CAST_SHARE else np.zeros(2)
    v = np.arange(256, dtype=np.float64)[None]
    y = 16 + (219 / 255) * np.clip(gain * v + black, 0, 255)
    u, vv = (128 + (224 / 255) * gain * (v - 128) + c for c in cast)
    return np.clip(np.stack([y, u, vv], axis=1), 0, 255).round().astype(np.int16)


def _noise_bank(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    return np.take(_GAUSS * sigma, rng.integers(0, 256, shape, dtype=np.uint8)).round().astype(np.int16)


def _shot(rng: np.random.Generator, path: str, span: tuple[int, int], core: tuple[int, int], fades: tuple[int, int],
          fps: int, size: tuple[int, int]) -> _Shot:
    """Scene frames span=(first, last) whose own span is core=(start, end) frames; fades = (half-fade in frames at
    its start, at its end), 0 for a cut. Motion and ramps extend into a fade's overlap."""
    (first, last), (a, b), (w, h) = span, core, size
    frames = np.arange(first, last)
    f = (frames - a) / max(1, b - a - 1)
    y_img, ycc = _working(path, size)
    boxes = _camera(rng, f, frames / fps, y_img.size, size)
    weight = np.ones(last - first)
    t = frames + 0.5
    if fades[0]:  # fading in over [a - h, a + h): the weight crosses 0.5 at the boundary a
        weight = np.minimum(weight, (t - (a - fades[0])) / (2 * fades[0]))
    if fades[1]:
        weight = np.minimum(weight, ((b + fades[1]) - t) / (2 * fades[1]))
    sigma = rng.uniform(*NOISE)
    return _Shot(first, y_img, ycc, boxes, _luts(rng, f), weight.astype(np.float32),
                 _noise_bank(rng, (h + PAD, w + PAD), sigma), _noise_bank(rng, (h // 2 + PAD // 2, w // 2 + PAD // 2),
                                                                          sigma / 2))


def _render(shot: _Shot, t: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Clean (noise-free) int16 Y, U, V planes of frame t."""
    j = t - shot.first
    box = tuple(float(v) for v in shot.boxes[j])
    w, h = size
    y = np.asarray(shot.y.resize((w, h), Image.BILINEAR, box=box))
    half = (box[0] / 2, box[1] / 2, min(box[2] / 2, shot.ycc.width), min(box[3] / 2, shot.ycc.height))
    c = np.asarray(shot.ycc.resize((w // 2, h // 2), Image.BILINEAR, box=half))
    lut = shot.luts[j]
    return [np.take(lut[0], y), np.take(lut[1], c[..., 1]), np.take(lut[2], c[..., 2])]


def _frames(rng: np.random.Generator, shots: list[_Shot], total: int, size: tuple[int, int]):
    """Yield (Y, U, V) uint8 planes for frames 0..total-1: one scene, or two blended over a cross-fade, plus the
    leading scene's sensor noise taken at a random offset of its bank."""
    w, h = size
    for t in range(total):
        live = [s for s in shots if s.first <= t < s.first + len(s.weight)]
        if len(live) == 1:
            planes, lead = _render(live[0], t, size), live[0]
        else:
            weights = [float(s.weight[t - s.first]) for s in live]
            parts = [_render(s, t, size) for s in live]
            planes = [np.rint(sum(wt * p[i] for wt, p in zip(weights, parts))).astype(np.int16) for i in range(3)]
            lead = live[int(np.argmax(weights))]
        dy, dx = rng.integers(0, PAD + 1, 2)
        planes[0] += lead.noise_y[dy:dy + h, dx:dx + w]
        for p in planes[1:]:
            p += lead.noise_c[dy // 2:dy // 2 + h // 2, dx // 2:dx // 2 + w // 2]
        yield tuple(np.clip(p, 0, 255).astype(np.uint8) for p in planes)

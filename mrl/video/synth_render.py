"""Drawing the synthetic videos' frames (mrl.video.synth): Fashion-MNIST items on a dark canvas, moving and zooming
scene by scene, or a strip of them panning past (continuous footage), with brightness ramps and pixel noise.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

ITEM = 28  # Fashion-MNIST side in pixels
CANVAS_REF = 64  # canvas side at which an item at scale 1 covers 28 pixels; other canvases scale items alike
SCALE = (1.5, 2.1)  # item size on the canvas, relative to 28 px at 64 px: 42-60 px, filling most of the frame
FADE_S = (0.5, 1.0)
FADE_SHARE = 0.5  # the rest are hard cuts
NOISE = (1.5, 5.0)  # gaussian pixel noise sigma, grey levels


def _interp(centres: np.ndarray, scales: np.ndarray, out_len: int, src_len: int = ITEM) -> np.ndarray:
    """(T, out_len, src_len) bilinear weights placing a src_len-pixel axis centred at `centres` (output pixels),
    magnified by `scales`. Scale and shift without rotation are separable, so a frame is Ry @ image @ Rx^T:
    one batched matmul renders a whole scene instead of a resize per frame."""
    t = len(centres)
    u = (np.arange(out_len, dtype=np.float64)[None] + 0.5 - centres[:, None]) / scales[:, None] + src_len / 2 - 0.5
    i0 = np.floor(u).astype(np.int64)
    w1 = u - i0
    w0 = np.where((i0 >= 0) & (i0 < src_len), 1 - w1, 0.0)
    w1 = np.where((i0 + 1 >= 0) & (i0 + 1 < src_len), w1, 0.0)
    m = np.zeros((t, out_len, src_len), np.float32)
    tt, oo = np.meshgrid(np.arange(t), np.arange(out_len), indexing="ij")
    # Out-of-range taps have weight 0, so clipping their index is harmless; a tap at -1 then lands on pixel 0 with
    # weight 0 before the in-range tap adds its own weight there.
    m[tt, oo, np.clip(i0, 0, src_len - 1)] = w0
    m[tt, oo, np.clip(i0 + 1, 0, src_len - 1)] += w1
    return m


def render_item(image: np.ndarray, cx: np.ndarray, cy: np.ndarray, scale: np.ndarray, size: int) -> np.ndarray:
    """(T, size, size) float32 frames of `image` centred at (cx, cy) canvas pixels, `scale` canvas pixels per item
    pixel, zero outside it."""
    img = image.astype(np.float32)
    ry, rx = _interp(cy, scale, size, image.shape[0]), _interp(cx, scale, size, image.shape[1])
    return ry @ img @ rx.transpose(0, 2, 1)


def _lerp(a: float, b: float, n: int) -> np.ndarray:
    return np.linspace(a, b, n) if n > 1 else np.array([a], np.float64)


def _frames_of(seconds: float, fps: int) -> int:
    return max(1, round(seconds * fps))


def _scene_lengths(rng: np.random.Generator, total: int, scene_s: tuple[float, float], fps: int) -> list[int]:
    """Scene lengths in frames summing to `total`; a remainder shorter than the shortest scene joins the last."""
    lengths: list[int] = []
    left = total
    while left > 0:
        n = min(_frames_of(rng.uniform(*scene_s), fps), left)
        if lengths and n < _frames_of(scene_s[0], fps) and n == left:
            lengths[-1] += n
        else:
            lengths.append(n)
        left -= n
    return lengths


def _scene_frames(image: np.ndarray, rng: np.random.Generator, first: int, n: int, core: tuple[int, int],
                  size: int) -> np.ndarray:
    """Frames first..first+n-1 of one scene whose own span is core=(start, end) frames: the motion, zoom and
    brightness ramp are linear over the core span and extend linearly into a cross-fade's overlap."""
    k = size / CANVAS_REF
    lo, hi = size * 0.42, size * 0.58  # centre range: the item stays mostly in view at any zoom
    x0, x1, y0, y1 = rng.uniform(lo, hi, 4)
    s0, s1 = rng.uniform(*SCALE, 2)
    g0, g1 = rng.uniform(0.55, 1.15, 2)  # brightness ramp
    background = rng.uniform(0, 30)
    f = (np.arange(first, first + n) - core[0]) / max(1, core[1] - core[0] - 1)
    scale = np.maximum(0.5, s0 + (s1 - s0) * f) * k
    item = render_item(image, x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, scale, size)
    gain = np.maximum(0.3, g0 + (g1 - g0) * f).astype(np.float32)
    return background + gain[:, None, None] * item


def _scenes_video(rng: np.random.Generator, images: np.ndarray, total: int, fps: int, size: int,
                  scene_s: tuple[float, float]) -> tuple[np.ndarray, list[tuple], list[tuple]]:
    """Frames, spans (start, end, item) and boundaries (frame, transition, fade length) in frames."""
    lengths = _scene_lengths(rng, total, scene_s, fps)
    edges = np.concatenate([[0], np.cumsum(lengths)])
    items = _pick_items(rng, len(images), len(lengths))
    # Half-fade in frames at each inner boundary (0 = hard cut); a scene never fades away more than half of itself.
    halves = []
    for j in range(1, len(lengths)):
        h = max(1, round(rng.uniform(*FADE_S) * fps / 2)) if rng.random() < FADE_SHARE else 0
        halves.append(min(h, lengths[j - 1] // 2, lengths[j] // 2))
    before, after = [0, *halves], [*halves, 0]
    out = np.zeros((total, size, size), np.float32)
    for j, item in enumerate(items):
        a, b = int(edges[j]), int(edges[j + 1])
        first, last = a - before[j], b + after[j]
        frames = _scene_frames(images[item], rng, first, last - first, (a, b), size)
        weight = np.ones(last - first, np.float32)
        t = np.arange(first, last) + 0.5
        if before[j]:  # fading in over [a - h, a + h): weight crosses 0.5 at the boundary a
            weight = np.minimum(weight, (t - (a - before[j])) / (2 * before[j]))
        if after[j]:
            weight = np.minimum(weight, ((b + after[j]) - t) / (2 * after[j]))
        out[first:last] += weight[:, None, None] * frames
    noise = np.repeat(rng.uniform(*NOISE, len(lengths)), lengths).astype(np.float32)
    spans = [(int(edges[j]), int(edges[j + 1]), item) for j, item in enumerate(items)]
    boundaries = [(int(edges[j]), "fade" if h else "cut", 2 * h) for j, h in enumerate(halves, start=1)]
    return _finish(rng, out, noise), spans, boundaries


def _continuous_video(rng: np.random.Generator, images: np.ndarray, total: int, fps: int, size: int,
                      scene_s: tuple[float, float]) -> tuple[np.ndarray, list[tuple], list[tuple]]:
    """A strip of items panning right to left. The pan is piecewise linear with knots when an item is exactly
    centred, so speed changes happen mid-span, never at a boundary (a boundary must not be visible as a jolt)."""
    k = size / CANVAS_REF
    centre = size / 2
    # Times (frames) at which each item is centred, gaps drawn like scene lengths. The first span's item is centred
    # a little before t=0 (so its span is not a sliver); one knot before it and two past the end give the items
    # partly in view at either end.
    def gap() -> float:
        return rng.uniform(*scene_s) * fps

    first = gap()
    knots = [-rng.uniform(0, 0.25) * first]
    knots = [knots[0] - gap(), knots[0], knots[0] + first]
    while knots[-2] < total:
        knots.append(knots[-1] + gap())
    knots = np.array(knots)
    n = len(knots)
    # Item j is the nearest to the centre between the midpoints of its knot and its neighbours'. A last span
    # shorter than half the shortest scene is cut off: the video ends at that boundary instead.
    bounds = np.rint((knots[:-1] + knots[1:]) / 2).astype(int)
    inner = bounds[(bounds > 0) & (bounds < total)]
    if len(inner) and total - inner[-1] < _frames_of(scene_s[0] / 2, fps):
        total = int(inner[-1])
    scales = rng.uniform(1.5, 2.0, n) * k
    widths = ITEM * scales
    # Strip positions: neighbours never overlap, and the gap leaves a little empty canvas between them.
    spacing = (widths[:-1] + widths[1:]) / 2 + rng.uniform(0.1, 0.45, n - 1) * size
    positions = np.concatenate([[0], np.cumsum(spacing)])
    t = np.arange(total, dtype=np.float64)
    # np.interp clamps outside the knots, so extend the first and last segments linearly by hand.
    pan = np.interp(t, knots, positions)
    pan = np.where(t < knots[0], positions[0] + (t - knots[0]) * spacing[0] / (knots[1] - knots[0]), pan)
    pan = np.where(t > knots[-1], positions[-1] + (t - knots[-1]) * spacing[-1] / (knots[-1] - knots[-2]), pan)
    sway = 0.06 * size * np.sin(2 * np.pi * t / (rng.uniform(15, 40) * fps) + rng.uniform(0, 2 * np.pi))
    items = _pick_items(rng, len(images), n)
    offsets = rng.uniform(-0.06, 0.06, n) * size
    gains = rng.uniform(0.7, 1.1, n)
    out = np.zeros((total, size, size), np.float32)
    for j, item in enumerate(items):
        cx = centre + positions[j] - pan
        visible = np.flatnonzero(np.abs(cx - centre) < (size + widths[j]) / 2 + 1)
        if len(visible):
            frames = render_item(images[item], cx[visible], centre + offsets[j] + sway[visible],
                                 np.full(len(visible), scales[j]), size)
            out[visible] = np.maximum(out[visible], gains[j] * frames)
    # Slow global drifts instead of per-scene ramps: there are no scenes to ramp over.
    light = 0.9 + 0.15 * np.sin(2 * np.pi * t / (rng.uniform(20, 60) * fps) + rng.uniform(0, 2 * np.pi))
    out = rng.uniform(5, 25) + light[:, None, None].astype(np.float32) * out
    edges = np.concatenate([[0], np.clip(bounds, 0, total), [total]])
    spans = [(int(edges[j]), int(edges[j + 1]), item) for j, item in enumerate(items) if edges[j + 1] > edges[j]]
    boundaries = [(a, "drift", 0) for a, _, _ in spans[1:]]
    return _finish(rng, out, np.full(total, rng.uniform(*NOISE), np.float32)), spans, boundaries


def _pick_items(rng: np.random.Generator, n_items: int, n: int) -> np.ndarray:
    """Distinct items where the split is big enough; otherwise any, but never the same item twice in a row."""
    if n <= n_items:
        return rng.choice(n_items, n, replace=False)
    picks = rng.integers(0, n_items, n)
    for j in range(1, n):
        if picks[j] == picks[j - 1] and n_items > 1:
            picks[j] = (picks[j] + 1) % n_items
    return picks


# Gaussian noise from random bytes through the normal quantiles: 256 levels are exact enough for a sigma of a few grey
# levels and it is 3x faster than standard_normal, which was a third of the rendering time.
_GAUSS = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


def _finish(rng: np.random.Generator, frames: np.ndarray, noise_sigma: np.ndarray) -> np.ndarray:
    noise = np.take(_GAUSS, rng.integers(0, 256, frames.shape, dtype=np.uint8))
    frames += noise * noise_sigma[:, None, None]
    return np.clip(frames, 0, 255, out=frames).round().astype(np.uint8)


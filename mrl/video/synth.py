"""Synthetic video corpora with ground truth, for the tests and the video search benchmark (no real footage ships).

Every video is drawn from Fashion-MNIST *test-split* items (the model never trained on them) on a dark grayscale
canvas and written with PyAV. Two kinds:
- "scenes": one item per scene, moving along a line and zooming, with a brightness ramp and pixel noise; scenes are
  joined by a hard cut or a cross-fade (the fade's midpoint is its ground-truth boundary).
- "continuous" (dashcam-like): a strip of items pans slowly across the canvas, no cuts; an item's span is the time
  its centre is the closest to the canvas centre, and those boundaries are recorded as "drift".

ground_truth.json beside the videos holds, per video, contiguous spans covering [0, duration] with the item shown
(id `fmnist-test-{index:05d}`, label, class) and the boundaries between them. Boundaries fall on frame times.

    python -m mrl.video.synth --out DIR --videos 1000 --mean-s 72 --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from statistics import NormalDist

import av
import numpy as np

from mrl.data.artifact import atomic_write
from mrl.data.readers import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, _find_idx, read_idx
from mrl.errors import MRLError
from mrl.progress import progress as progress_bar

GROUND_TRUTH = "ground_truth.json"
ITEM = 28  # Fashion-MNIST side in pixels
CANVAS_REF = 64  # canvas side at which an item at scale 1 covers 28 pixels; other canvases scale items alike
SCALE = (1.5, 2.1)  # item size on the canvas, relative to 28 px at 64 px: 42-60 px, filling most of the frame
FADE_S = (0.5, 1.0)
FADE_SHARE = 0.5  # the rest are hard cuts
NOISE = (1.5, 5.0)  # gaussian pixel noise sigma, grey levels
# Encoder settings per codec: fast presets (the benchmark writes 20+ hours on 2 cores) and one thread each (the
# pool, not the encoder, uses the cores). crf 28 on ultrafast keeps most of the pixel noise at ~0.3 MB per 72 s.
ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "28", "threads": "1"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "threads": "1"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "0", "threads": "1"},
    "libsvtav1": {"preset": "11"},  # its fastest; 12 is mapped to 11 with a warning
}
BIT_RATE = 400_000  # for encoders without a quality option set above (mpeg4, vp8, vp9)


# --- rendering ----------------------------------------------------------------------------------

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
# Full range grey -> limited ("TV") range luma, what decoders assume for untagged yuv420p.
_LUMA = np.round(16 + np.arange(256) * (219 / 255)).astype(np.uint8)


def _finish(rng: np.random.Generator, frames: np.ndarray, noise_sigma: np.ndarray) -> np.ndarray:
    noise = np.take(_GAUSS, rng.integers(0, 256, frames.shape, dtype=np.uint8))
    frames += noise * noise_sigma[:, None, None]
    return np.clip(frames, 0, 255, out=frames).round().astype(np.uint8)


# --- encoding -----------------------------------------------------------------------------------

def _encoder(codec: str) -> av.codec.Codec:
    try:
        found = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise MRLError(f"codec {codec!r}: no such encoder in this PyAV build") from None
    if found.type != "video":
        raise MRLError(f"codec {codec!r}: not a video encoder")
    return found


def write_video(path: str | Path, frames: np.ndarray, fps: int, codec: str = "h264") -> Path:
    """Write (T, H, W) uint8 grayscale frames (full range, 0 = black) as yuv420p through a temporary name: a crash
    never leaves half a video under the real name."""
    path = Path(path)
    _, h, w = frames.shape
    luma = np.take(_LUMA, np.asarray(frames, np.uint8))
    grey = np.full((h // 2, w // 2), 128, np.uint8)
    return write_yuv420(path, ((y, grey, grey) for y in luma), fps, codec, (w, h))


def write_yuv420(path: str | Path, planes, fps: int, codec: str, size: tuple[int, int],
                 bit_rate: int = BIT_RATE) -> Path:
    """Write frames given as an iterable of (Y (H, W), U (H/2, W/2), V (H/2, W/2)) uint8 planes, already in limited
    ("TV") range, through a temporary name. An iterable, not an array: long colour videos need not fit in memory.
    `bit_rate` (bits/s) applies to encoders without a quality option in ENCODER_OPTIONS."""
    path = Path(path)
    name = _encoder(codec).name
    w, h = size
    if h % 2 or w % 2:
        raise MRLError(f"{path}: frame size {w}x{h} must be even (yuv420p halves the chroma planes)")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the suffix: PyAV picks the container by it
    try:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream(name, rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.codec_context.thread_count = 1
            if name in ENCODER_OPTIONS:
                stream.options = dict(ENCODER_OPTIONS[name])
            if name not in ("libx264", "libsvtav1"):
                stream.bit_rate = bit_rate
            # Filling the planes of a new frame costs a sixth of from_ndarray, which was a third of encoding. Planes
            # may be padded to an aligned line size, so each is written as (height, line_size).
            frame = av.VideoFrame(w, h, "yuv420p")
            padded = [np.zeros((p.height, p.line_size), np.uint8) for p in frame.planes]
            for i, values in enumerate(planes):
                frame = av.VideoFrame(w, h, "yuv420p")  # a fresh one each time: the encoder may hold the last
                for plane, buffer, value in zip(frame.planes, padded, values):
                    buffer[:, : value.shape[1]] = value
                    plane.update(buffer)
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except (av.FFmpegError, ValueError) as e:  # ValueError: PyAV's "format does not support codec", unknown suffix
        tmp.unlink(missing_ok=True)
        raise MRLError(f"{path}: cannot write {path.suffix} with codec {codec!r} ({e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- corpus -------------------------------------------------------------------------------------

def load_test_split(fashion_mnist_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST test images (N, 28, 28) uint8 and labels (N,)."""
    directory = Path(fashion_mnist_dir)
    if not directory.is_dir():
        raise MRLError(f"{directory}: directory not found (expected the Fashion-MNIST idx files)")
    image_stem, label_stem = FASHION_MNIST_FILES["test"]
    images = read_idx(_find_idx(directory, image_stem), 3)
    labels = read_idx(_find_idx(directory, label_stem), 1)
    if len(images) != len(labels) or len(images) == 0 or images.shape[1:] != (ITEM, ITEM):
        raise MRLError(f"{directory}: test split has {images.shape} images and {len(labels)} labels")
    return images, labels


def _is_continuous(index: int, share: float) -> bool:
    # Spread evenly and fixed by the index alone: a video's kind never depends on how many videos are made.
    return math.floor((index + 1) * share + 1e-9) > math.floor(index * share + 1e-9)


def make_video(index: int, out_dir: str | Path, images: np.ndarray, labels: np.ndarray, seed: int, mean_video_s: float,
               fps: int, size: int, continuous_share: float, scene_s: tuple[float, float], suffix: str,
               codec: str) -> dict:
    """Render and write video `index`; returns its ground-truth record. Seeded by (seed, index) alone, so any
    process can make any video and the corpus is the same however the work is split."""
    rng = np.random.default_rng([seed, index])
    kind = "continuous" if _is_continuous(index, continuous_share) else "scenes"
    total = _frames_of(mean_video_s * rng.uniform(0.6, 1.4), fps)
    draw = _continuous_video if kind == "continuous" else _scenes_video
    frames, spans, boundaries = draw(rng, images, total, fps, size, scene_s)
    total = len(frames)  # a continuous video may end early at a boundary
    name = f"v{index:05d}{suffix}"
    write_video(Path(out_dir) / name, frames, fps, codec)
    scenes = [{"start_s": round(a / fps, 6), "end_s": round(b / fps, 6), "item_id": f"fmnist-test-{int(i):05d}",
               "item_index": int(i), "label": int(labels[i]), "class": FASHION_MNIST_CLASSES[int(labels[i])]}
              for a, b, i in spans]
    marks = [{"t_s": round(t / fps, 6), "transition": kind, **({"fade_s": round(n / fps, 6)} if n else {})}
             for t, kind, n in boundaries]
    return {"file": name, "kind": kind, "duration_s": round(total / fps, 6), "frames": total,
            "scenes": scenes, "boundaries": marks}


_WORKER: dict = {}


def _init_worker(fashion_mnist_dir: str) -> None:
    # Each worker reads the test split once (8 MB) rather than receiving it with every task.
    _WORKER["images"], _WORKER["labels"] = load_test_split(fashion_mnist_dir)


def _make_in_worker(index: int, kwargs: dict) -> dict:
    return make_video(index, images=_WORKER["images"], labels=_WORKER["labels"], **kwargs)


def _check(n_videos: int, mean_video_s: float, fps: int, size: int, continuous_share: float,
           scene_s: tuple[float, float], suffix: str, workers: int) -> None:
    if n_videos < 1:
        raise MRLError(f"n_videos: {n_videos}, need at least 1")
    if not mean_video_s > 0:
        raise MRLError(f"mean_video_s: {mean_video_s}, need > 0")
    if int(fps) != fps or fps < 1:
        raise MRLError(f"fps: {fps}, need a whole number >= 1")
    if size < 16 or size % 2:
        raise MRLError(f"size: {size}, need an even number >= 16 (yuv420p)")
    if not 0 <= continuous_share <= 1:
        raise MRLError(f"continuous_share: {continuous_share}, need 0..1")
    if len(scene_s) != 2 or not 0 < scene_s[0] <= scene_s[1]:
        raise MRLError(f"scene_s: {scene_s}, need (min, max) seconds with 0 < min <= max")
    if not suffix.startswith(".") or len(suffix) < 2:
        raise MRLError(f"suffix: {suffix!r}, need a file suffix such as '.mp4'")
    if workers < 1:
        raise MRLError(f"workers: {workers}, need at least 1")


def generate_corpus(out_dir: str | Path, n_videos: int, mean_video_s: float = 72.0,
                    fashion_mnist_dir: str | Path = "/usr/share/datasets/fashion-mnist", seed: int = 0, fps: int = 10,
                    size: int = 64, continuous_share: float = 0.2, scene_s: tuple[float, float] = (3.0, 12.0),
                    suffix: str = ".mp4", codec: str = "h264", workers: int = 1, progress: bool = True) -> Path:
    """Write `n_videos` videos v00000.<suffix>… and ground_truth.json into out_dir; returns the JSON's path.
    Durations vary around mean_video_s (0.6x to 1.4x); the same seed gives the same corpus."""
    scene_s = tuple(float(s) for s in scene_s)
    _check(n_videos, mean_video_s, fps, size, continuous_share, scene_s, suffix, workers)
    _encoder(codec)  # fail before any work on a codec this build lacks
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(out_dir=str(out), seed=seed, mean_video_s=float(mean_video_s), fps=int(fps), size=int(size),
                  continuous_share=float(continuous_share), scene_s=scene_s, suffix=suffix, codec=codec)
    records: dict[int, dict] = {}
    bar = progress_bar(None, "videos", unit="video", total=n_videos, disable=not progress)
    if workers == 1:
        images, labels = load_test_split(fashion_mnist_dir)
        for i in range(n_videos):
            records[i] = make_video(i, images=images, labels=labels, **kwargs)
            bar.update(1)
    else:
        load_test_split(fashion_mnist_dir)  # a bad directory fails here with its message, not inside a worker
        # spawn: workers start clean whatever the caller has loaded (threads, torch) and cost well under a second.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(str(fashion_mnist_dir),)) as pool:
            futures = {pool.submit(_make_in_worker, i, kwargs): i for i in range(n_videos)}
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                bar.update(1)
    bar.close()
    truth = {"fps": int(fps), "size": int(size), "seed": seed, "codec": codec,
             "videos": [records[i] for i in range(n_videos)]}
    path = out / GROUND_TRUTH
    atomic_write(path, lambda f: f.write(json.dumps(truth, indent=1).encode()))
    return path


def load_ground_truth(path: str | Path) -> dict:
    """Read ground_truth.json (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH
    try:
        truth = json.loads(path.read_text())
    except FileNotFoundError:
        raise MRLError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise MRLError(f"{path}: not JSON ({e})") from None
    if not isinstance(truth, dict) or not isinstance(truth.get("videos"), list) or "fps" not in truth:
        raise MRLError(f"{path}: not a synthetic-video ground truth (no 'fps' and 'videos')")
    return truth


# --- queries ------------------------------------------------------------------------------------

def augmented_query(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A differently augmented 28x28 view of an item, as an instance-search query: small shift and scale, a
    brightness change and noise, none of them tied to how the item appears in any video."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise MRLError(f"augmented_query: need a 2-D uint8 image, got {image.dtype} {image.shape}")
    h, w = image.shape
    cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
    scale = np.array([rng.uniform(0.85, 1.15)])
    view = render_item(image, np.array([cx]), np.array([cy]), scale, h)[0] if h == w else image.astype(np.float32)
    view = view * rng.uniform(0.7, 1.3) + rng.uniform(0, 20) + rng.normal(0, rng.uniform(3, 8), view.shape)
    return np.clip(view, 0, 255).round().astype(np.uint8)


# --- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mrl.video.synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (videos + ground_truth.json)")
    p.add_argument("--videos", type=int, default=10)
    p.add_argument("--mean-s", type=float, default=72.0, help="mean video duration in seconds")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--continuous-share", type=float, default=0.2)
    p.add_argument("--scene-s", type=float, nargs=2, default=(3.0, 12.0), metavar=("MIN", "MAX"))
    p.add_argument("--suffix", default=".mp4")
    p.add_argument("--codec", default="h264")
    p.add_argument("--fashion-mnist-dir", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args(argv)
    start = time.perf_counter()
    try:
        path = generate_corpus(a.out, a.videos, a.mean_s, a.fashion_mnist_dir, a.seed, a.fps, a.size,
                               a.continuous_share, tuple(a.scene_s), a.suffix, a.codec, a.workers)
    except MRLError as e:
        raise SystemExit(f"error: {e}") from None
    took = time.perf_counter() - start
    truth = load_ground_truth(path)
    videos = truth["videos"]
    seconds = sum(v["duration_s"] for v in videos)
    frames = sum(v["frames"] for v in videos)
    mb = sum((path.parent / v["file"]).stat().st_size for v in videos) / 1e6
    continuous = sum(v["kind"] == "continuous" for v in videos)
    print(f"wrote {len(videos)} videos ({continuous} continuous, {sum(len(v['scenes']) for v in videos)} spans, "
          f"{mb:.1f} MB) and {path}")
    print(f"{seconds / 3600:.2f} hours of video in {took:.1f} s ({frames / took:,.0f} frames/s, "
          f"{seconds / took:,.0f}x real time)")


if __name__ == "__main__":
    main()

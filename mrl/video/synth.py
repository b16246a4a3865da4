"""Synthetic video corpora with ground truth, for the tests and the video search benchmark (no real footage ships).

Every video is drawn from Fashion-MNIST *test-split* items (the model never trained on them) on a dark grayscale
canvas and written with PyAV. Two kinds:
- "scenes": one item per scene, moving along a line and zooming, with a brightness ramp and pixel noise; scenes are
  joined by a hard cut or a cross-fade (the fade's midpoint is its ground-truth boundary).
- "continuous" (dashcam-like): a strip of items pans slowly across the canvas, no cuts; an item's span is the time
  its centre is the closest to the canvas centre, and those boundaries are recorded as "drift".

ground_truth.json beside the videos holds, per video, contiguous spans covering [0, duration] with the item shown
(id `fmnist-test-{index:05d}`, label, class) and the boundaries between them. Boundaries fall on frame times.

Modules: mrl.video.synth_render draws the frames, mrl.video.encode writes them; this one makes the corpus.

    python -m mrl.video.synth --out DIR --videos 1000 --mean-s 72 --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mrl.data.artifact import atomic_write
from mrl.data.readers import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, _find_idx, read_idx
from mrl.errors import MRLError
from mrl.progress import progress as progress_bar
from mrl.video.encode import _encoder, write_video
from mrl.video.synth_render import ITEM, _continuous_video, _frames_of, _scenes_video, render_item

GROUND_TRUTH = "ground_truth.json"


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

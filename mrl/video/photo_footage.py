"""Real-photo video corpora with ground truth, for video moment search on real content (a sibling of synth.py).

The photographs come from Debian packages (scripts/get-photos.sh installs them). Each video is a sequence of
scenes; a scene films one photo as a handheld camera would: a crop window that pans and zooms across it, a few
pixels of shake, a brightness drift, sensor noise and sometimes a colour cast. Scenes are joined by hard cuts or
cross-fades (the fade's midpoint is the boundary). Videos vary in frame size (up to 640 px wide), frame rate
(12-30 fps) and codec (H.264 .mp4, VP9 .webm, MPEG-4 .avi).

Photos are split by *group* (near-duplicates such as a stereo pair share one), so no place is on both sides of the
train/benchmark split. Query stills are other crops of a photo, mirrored, colour-jittered and JPEG-compressed.

ground_truth.json has synth.py's schema: per video, contiguous spans covering [0, duration] with the photo shown
(item_id = photo id, item_index = its index in "photos", label = its group's index in "groups", class = group) and
the boundaries between spans. Boundaries fall on frame times. Per-video fps, size and codec are in each record.

Modules: mrl.video.photos finds, splits and loads the photos (and makes query stills), mrl.video.camera films a
scene; this one plans and writes the corpus.

    python -m mrl.video.photo_footage --out DIR --videos 20 --mean-s 40 --split bench --queries QDIR
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.progress import progress as progress_bar
from mrl.video.camera import _frames, _shot
from mrl.video.encode import _encoder, write_yuv420
from mrl.video.photos import PHOTO_DIRS, Photo, find_photos, split_photos, write_queries
from mrl.video.synth import GROUND_TRUTH, load_ground_truth
from mrl.video.synth_render import FADE_S, FADE_SHARE, _frames_of, _scene_lengths

# --- footage ------------------------------------------------------------------------------------

SIZES = ((640, 360), (480, 270), (320, 180))  # px, 16:9; each video keeps one
FPS = (12, 15, 24, 25, 30)
CODECS = ("h264", "vp9", "mpeg4")
SUFFIX = {"h264": ".mp4", "vp9": ".webm", "mpeg4": ".avi"}  # a codec not listed goes in .mkv
SCENE_S = (3.0, 10.0)
BITS_PER_PIXEL = 0.12  # VP9 / MPEG-4 bit rate per pixel and frame: ~370 kb/s at 480x270, 24 fps


def _pick_photos(rng: np.random.Generator, n: int, n_query: int, n_distract: int, share: float) -> np.ndarray:
    """A photo per scene (index into queries + distractors): a distractor with probability `share`, photos not yet
    in this video first, and never the same photo in two scenes in a row (a boundary must change the photo) unless
    there is only one photo."""
    items: list[int] = []
    everything = range(n_query + n_distract)
    for _ in range(n):
        pool = range(n_query, n_query + n_distract) if n_distract and rng.random() < share else range(n_query)
        last = items[-1] if items else -1
        allowed = [i for i in pool if i != last] or [i for i in everything if i != last] or list(pool)
        fresh = [i for i in allowed if i not in items] or allowed
        items.append(fresh[rng.integers(len(fresh))])
    return np.array(items, np.int64)


def _plan(rng: np.random.Generator, total: int, fps: int, n_query: int, n_distract: int, share: float,
          scene_s: tuple[float, float]) -> tuple[list[int], np.ndarray, list[int]]:
    """Scene lengths (frames), photo per scene (index into queries + distractors) and half-fade per inner boundary
    (frames, 0 = hard cut)."""
    lengths = _scene_lengths(rng, total, scene_s, fps)
    items = _pick_photos(rng, len(lengths), n_query, n_distract, share)
    halves = []
    for j in range(1, len(lengths)):  # a scene never fades away more than half of itself
        h = max(1, round(rng.uniform(*FADE_S) * fps / 2)) if rng.random() < FADE_SHARE else 0
        halves.append(min(h, lengths[j - 1] // 2, lengths[j] // 2))
    return lengths, items, halves


def make_photo_video(index: int, out_dir: str, pool: list[Photo], n_query: int, seed: int, mean_video_s: float,
                     size: tuple[int, int] | None, fps: tuple[int, ...], codecs: tuple[str, ...],
                     distractor_share: float, scene_s: tuple[float, float]) -> dict:
    """Render and write video `index` from pool = queries + distractors (the first n_query are queries); returns its
    ground-truth record. Seeded by (seed, index) alone, so any process can make any video."""
    rng = np.random.default_rng([seed, index])
    size = tuple(size) if size else SIZES[rng.integers(len(SIZES))]
    fps = int(rng.choice(fps))
    codec = codecs[index % len(codecs)]  # spread evenly whatever the count
    total = _frames_of(mean_video_s * rng.uniform(0.6, 1.4), fps)
    lengths, items, halves = _plan(rng, total, fps, n_query, len(pool) - n_query, distractor_share, scene_s)
    edges = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    before, after = [0, *halves], [*halves, 0]
    shots = [_shot(rng, pool[i].path, (edges[j] - before[j], edges[j + 1] + after[j]), (edges[j], edges[j + 1]),
                   (before[j], after[j]), fps, size) for j, i in enumerate(items)]
    name = f"v{index:05d}{SUFFIX.get(codec, '.mkv')}"
    bit_rate = max(200_000, int(BITS_PER_PIXEL * size[0] * size[1] * fps))
    write_yuv420(Path(out_dir) / name, _frames(rng, shots, total, size), fps, codec, size, bit_rate)
    groups = sorted({p.group for p in pool})
    scenes = [{"start_s": round(edges[j] / fps, 6), "end_s": round(edges[j + 1] / fps, 6), "item_id": pool[i].id,
               "item_index": int(i), "label": groups.index(pool[i].group), "class": pool[i].group,
               "distractor": bool(i >= n_query)} for j, i in enumerate(items)]
    marks = [{"t_s": round(edges[j] / fps, 6), "transition": "fade" if h else "cut",
              **({"fade_s": round(2 * h / fps, 6)} if h else {})} for j, h in enumerate(halves, start=1)]
    return {"file": name, "kind": "scenes", "duration_s": round(total / fps, 6), "frames": total, "fps": fps,
            "width": size[0], "height": size[1], "codec": codec, "scenes": scenes, "boundaries": marks}


def _make_in_worker(index: int, kwargs: dict) -> dict:
    return make_photo_video(index, **kwargs)


def _check(photos: list, distractors: list, n_videos: int, mean_video_s: float, size, fps: tuple[int, ...],
           codecs: tuple[str, ...], distractor_share: float, scene_s: tuple[float, float], workers: int) -> None:
    if not photos:
        raise MRLError("photos: none given")
    if {p.id for p in photos} & {p.id for p in distractors}:
        raise MRLError("distractors: some are also query photos")
    if n_videos < 1 or workers < 1:
        raise MRLError(f"n_videos: {n_videos}, workers: {workers}, need at least 1 each")
    if not mean_video_s > 0:
        raise MRLError(f"mean_video_s: {mean_video_s}, need > 0")
    if size and (len(size) != 2 or size[0] % 2 or size[1] % 2 or not 16 <= size[0] <= 640 or size[1] < 16):
        raise MRLError(f"size: {size}, need (width, height), even, 16..640 px wide (yuv420p halves chroma)")
    if not fps or any(int(f) != f or f < 1 for f in fps):
        raise MRLError(f"fps: {fps}, need whole numbers >= 1")
    if not codecs:
        raise MRLError("codecs: none given")
    for codec in codecs:
        _encoder(codec)  # fail before any work on a codec this build lacks
    if not 0 <= distractor_share <= 1 or (distractor_share > 0 and not distractors):
        raise MRLError(f"distractor_share: {distractor_share}, need 0..1 and a distractors list when > 0")
    if len(scene_s) != 2 or not 0 < scene_s[0] <= scene_s[1]:
        raise MRLError(f"scene_s: {scene_s}, need (min, max) seconds with 0 < min <= max")


def generate_photo_footage(out_dir: str | Path, photos: list[Photo], n_videos: int, mean_video_s: float = 40.0,
                           size: tuple[int, int] | None = None, fps: int | tuple[int, ...] = FPS, seed: int = 0,
                           workers: int = 2, codecs: tuple[str, ...] = CODECS, distractors: list[Photo] = (),
                           distractor_share: float = 0.0, scene_s: tuple[float, float] = SCENE_S,
                           progress: bool = True) -> dict:
    """Write videos v00000.<suffix>… and ground_truth.json into out_dir; returns the ground truth. size None picks
    one of SIZES per video, fps one of the choices given; durations vary 0.6x-1.4x around mean_video_s. A share
    `distractor_share` of the scenes shows `distractors` (photos that are not queries)."""
    fps = (int(fps),) if np.isscalar(fps) else tuple(int(f) for f in fps)
    codecs, scene_s, distractors = tuple(codecs), tuple(float(s) for s in scene_s), list(distractors)
    _check(photos, distractors, n_videos, mean_video_s, size, fps, codecs, distractor_share, scene_s, workers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool = [*photos, *distractors]
    kwargs = dict(out_dir=str(out), pool=pool, n_query=len(photos), seed=seed, mean_video_s=float(mean_video_s),
                  size=tuple(size) if size else None, fps=fps, codecs=codecs,
                  distractor_share=float(distractor_share), scene_s=scene_s)
    records: dict[int, dict] = {}
    bar = progress_bar(None, "videos", unit="video", total=n_videos, disable=not progress)
    if workers == 1:
        for i in range(n_videos):
            records[i] = make_photo_video(i, **kwargs)
            bar.update(1)
    else:
        # spawn: workers start clean whatever the caller has loaded (threads, torch); each loads photos as needed.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool_exec:
            futures = {pool_exec.submit(_make_in_worker, i, kwargs): i for i in range(n_videos)}
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                bar.update(1)
    bar.close()
    truth = {"kind": "photo-footage", "fps": fps[0] if len(fps) == 1 else None, "size": list(size) if size else None,
             "seed": seed, "codec": list(codecs), "groups": sorted({p.group for p in pool}),
             "photos": [{"id": p.id, "group": p.group, "path": p.path, "distractor": i >= len(photos)}
                        for i, p in enumerate(pool)],
             "videos": [records[i] for i in range(n_videos)]}
    atomic_write(out / GROUND_TRUTH, lambda f: f.write(json.dumps(truth, indent=1).encode()))
    return truth


# --- command line -------------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: need WIDTHxHEIGHT, e.g. 480x270") from None
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mrl.video.photo_footage", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (videos + ground_truth.json)")
    p.add_argument("--videos", type=int, default=10)
    p.add_argument("--mean-s", type=float, default=40.0, help="mean video duration in seconds")
    p.add_argument("--split", choices=("bench", "train", "all"), default="bench", help="whose photos the videos show")
    p.add_argument("--bench-share", type=float, default=0.5, help="share of the photos (by group) in bench")
    p.add_argument("--distractor-share", type=float, default=0.0,
                   help="share of bench scenes showing train photos, which have no queries (bench only)")
    p.add_argument("--size", type=_size, default=None, help="WxH for every video (default: one of "
                   f"{', '.join(f'{w}x{h}' for w, h in SIZES)} per video)")
    p.add_argument("--fps", type=int, nargs="+", default=list(FPS), help="frame rates to choose from per video")
    p.add_argument("--codecs", nargs="+", default=list(CODECS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queries", help="also write query stills (JPEG) of the split's photos and queries.json here")
    p.add_argument("--queries-per-photo", type=int, default=3)
    p.add_argument("--photo-dirs", nargs="+", default=list(PHOTO_DIRS))
    return p


def _select(a: argparse.Namespace) -> tuple[list[Photo], list[Photo], int]:
    """(query photos, distractors, photos found) for the split asked for."""
    found = find_photos(a.photo_dirs)
    train, bench = split_photos(found, a.bench_share, a.seed)
    if a.distractor_share and a.split != "bench":
        raise MRLError("--distractor-share: bench only (train photos are the distractors; bench ones must not leak "
                       "into training footage)")
    photos = {"bench": bench, "train": train, "all": found}[a.split]
    if not photos:
        raise MRLError(f"--split {a.split}: no photos on that side (bench share {a.bench_share})")
    return photos, train if a.distractor_share else [], len(found)


def main(argv: list[str] | None = None) -> None:
    a = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        photos, distractors, n_found = _select(a)
        generate_photo_footage(a.out, photos, a.videos, a.mean_s, a.size, tuple(a.fps), a.seed, a.workers,
                                       tuple(a.codecs), distractors, a.distractor_share)
        queries = write_queries(a.queries, photos, a.queries_per_photo, a.seed) if a.queries else None
    except MRLError as e:
        raise SystemExit(f"error: {e}") from None
    took = time.perf_counter() - start
    out = Path(a.out)
    videos = load_ground_truth(out)["videos"]  # as a reader sees it
    seconds = sum(v["duration_s"] for v in videos)
    mb = sum((out / v["file"]).stat().st_size for v in videos) / 1e6
    shown = {s["item_id"] for v in videos for s in v["scenes"]}
    print(f"wrote {len(videos)} videos ({sum(len(v['scenes']) for v in videos)} spans, {mb:.1f} MB) and "
          f"{out / GROUND_TRUTH}")
    print(f"{seconds / 3600:.2f} hours of video in {took:.1f} s ({seconds / took:,.1f}x real time)")
    print(f"photos: {len(photos)} in split {a.split} of {n_found} found, {len(shown & {p.id for p in photos})} "
          f"shown; {len(shown & {p.id for p in distractors})} distractors shown")
    if queries:
        print(f"wrote {len(photos) * a.queries_per_photo} query stills and {queries}")


if __name__ == "__main__":
    main()

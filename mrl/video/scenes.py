"""Scenes from the cheap prefix: embed sampled frames with the champion, cut each video where consecutive frames'
small prefixes stop looking alike (or into fixed, overlapping windows), and describe every segment by the mean of
its frames' full embeddings. Writes the segments artifact that `mrl index promote --segments` indexes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.config import Config, VideoConfig
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.retrieval.funnel import normalized_prefix
from mrl.video.frames import Frames, load_frames


@dataclass(frozen=True)
class Segments:
    """Segments of a set of videos and the frames they were built from (stage 3 of search refines with those)."""

    ids: np.ndarray  # str (S,): "<video id>:<n>"
    video_ids: np.ndarray  # str (S,)
    start_s: np.ndarray  # float64 (S,)
    end_s: np.ndarray  # float64 (S,)
    embeddings: np.ndarray  # float32 (S, D): normalized mean of the segment's frames' full embeddings
    frame_ranges: np.ndarray  # int64 (S, 2): [first, last + 1) rows of the frame arrays below
    thumbnails: np.ndarray  # uint8 (S, C, H, W): the segment's frame nearest its mean embedding
    frame_times: np.ndarray  # float64 (N,)
    frame_embeddings: np.ndarray  # float32 (N, D), normalized
    videos: np.ndarray  # str (V,)
    durations: np.ndarray  # float64 (V,)
    meta: dict  # model name and version, scene_dim, segmenter, fps, video_root (the ingested folder; "": unknown)

    def __len__(self) -> int:
        return len(self.ids)


def save_segments(s: Segments, path: str | Path) -> Path:
    path = Path(path)
    arrays = {name: getattr(s, name) for name in Segments.__dataclass_fields__ if name != "meta"}
    arrays |= {"kind": np.array("video_segments"), "meta": np.array(json.dumps(s.meta))}
    atomic_write(path, lambda out: np.savez_compressed(out, **arrays))
    return path


def load_segments(path: str | Path) -> Segments:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["kind"]) != "video_segments":
                raise MRLError(f"{path}: a {z['kind']} artifact, not video segments (from `mrl segment`)")
            fields = {name: z[name] for name in Segments.__dataclass_fields__ if name != "meta"}
            return Segments(**fields, meta=json.loads(str(z["meta"])))
    except FileNotFoundError:
        raise MRLError(f"{path}: segments file not found") from None
    except (OSError, ValueError, KeyError) as e:
        raise MRLError(f"{path}: not a video segments artifact ({e})") from None


def cut_scenes(times: np.ndarray, prefixes: np.ndarray, threshold: float, min_s: float, max_s: float) -> list[int]:
    """Start rows of the scenes of one video: a cut before frame i when cos(prefix[i-1], prefix[i]) < threshold
    (`prefixes` normalized). Scenes shorter than min_s join the neighbour they resemble most; scenes longer than
    max_s are split evenly."""
    similarity = np.einsum("ij,ij->i", prefixes[:-1], prefixes[1:])
    starts = [0, *(np.flatnonzero(similarity < threshold) + 1).tolist()]
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    ends = lambda: [*starts[1:], len(times)]  # noqa: E731
    while len(starts) > 1:  # merge the shortest too-short scene until none is left
        lengths = [times[e - 1] - times[s] + step for s, e in zip(starts, ends())]
        shortest = int(np.argmin(lengths))
        if lengths[shortest] >= min_s:
            break
        if shortest == 0:
            del starts[1]  # the first scene joins the next
        elif shortest == len(starts) - 1:
            del starts[shortest]  # the last joins the previous
        else:  # join the side it is more like: the similarity across each of its two cuts
            before, after = similarity[starts[shortest] - 1], similarity[starts[shortest + 1] - 1]
            del starts[shortest if before >= after else shortest + 1]
    out = []
    for s, e in zip(starts, ends()):
        length = times[e - 1] - times[s] + step
        parts = max(1, int(np.ceil(length / max_s - 1e-9)))
        out += [s + (e - s) * p // parts for p in range(parts)]
    return out


def windows(times: np.ndarray, window_s: float, stride_s: float) -> list[tuple[int, int]]:
    """[first, last + 1) rows of fixed windows every stride_s seconds (overlapping when stride_s < window_s)."""
    out, start = [], float(times[0])
    while True:
        rows = np.flatnonzero((times >= start - 1e-9) & (times < start + window_s - 1e-9))
        if len(rows):
            out.append((int(rows[0]), int(rows[-1]) + 1))
        if start + window_s >= times[-1] + 1e-9:
            break
        start += stride_s
    return out


def scene_dim_for(cfg: Config, nesting_dims: list[int], dim_metrics: Callable[[], dict[int, float]] | None) -> int:
    """video.scene_dim if set (it must be a nesting dim), else the smallest nesting dim whose evaluation
    (registry.primary_metric) reaches video.scene_dim_quality of the full dim's."""
    v = cfg.video
    if v.scene_dim:
        if v.scene_dim not in nesting_dims:
            raise MRLError(f"video.scene_dim: {v.scene_dim} is not a nesting dim of the model ({nesting_dims})")
        return v.scene_dim
    metrics = dim_metrics() if dim_metrics else {}
    if not metrics:
        return nesting_dims[0]
    full = metrics[nesting_dims[-1]]
    return next(d for d in nesting_dims if metrics[d] >= v.scene_dim_quality * full)


def build_segments(frames: Frames, embeddings: np.ndarray, vcfg: VideoConfig, scene_dim: int, meta: dict) -> Segments:
    """Segments of every video from its frames' full embeddings (rows aligned with `frames`)."""
    embeddings = normalized_prefix(embeddings, embeddings.shape[1])
    prefixes = normalized_prefix(embeddings, scene_dim)
    ids, video_ids, starts, ends, vectors, ranges, thumbs = [], [], [], [], [], [], []
    for video, duration in zip(frames.videos, frames.durations):
        rows = frames.rows_of(video)
        times = frames.times[rows]
        if vcfg.segmenter == "cuts":
            first = cut_scenes(times, prefixes[rows], vcfg.cut_threshold, vcfg.min_scene_s, vcfg.max_scene_s)
            spans = list(zip(first, [*first[1:], len(rows)]))
        else:
            spans = windows(times, vcfg.window_s, vcfg.window_stride_s)
        for n, (a, b) in enumerate(spans):
            mean = embeddings[rows[a:b]].mean(axis=0)
            mean /= max(float(np.linalg.norm(mean)), 1e-12)
            ids.append(f"{video}:{n}")
            video_ids.append(video)
            starts.append(float(times[a]))
            # a scene ends where the next begins; the last (and a window) one sampling step after its last frame
            next_start = times[b] if vcfg.segmenter == "cuts" and b < len(rows) else times[b - 1] + 1.0 / frames.fps
            ends.append(float(min(next_start, duration)))
            vectors.append(mean)
            ranges.append((rows[a], rows[b - 1] + 1))
            thumbs.append(frames.pixels[rows[a] + int(np.argmax(embeddings[rows[a:b]] @ mean))])
    return Segments(np.array(ids), np.array(video_ids), np.array(starts), np.array(ends),
                    np.stack(vectors).astype(np.float32), np.array(ranges, dtype=np.int64), np.stack(thumbs),
                    frames.times, embeddings.astype(np.float32), frames.videos, frames.durations,
                    meta | {"scene_dim": scene_dim, "segmenter": vcfg.segmenter, "fps": frames.fps,
                            "video_root": frames.root})


@dataclass(frozen=True)
class SegmentResult:
    path: Path
    videos: int
    frames: int
    segments: int
    scene_dim: int
    model_version: str


def segment_videos(cfg: Config, frames_path: str | Path, output: str | Path, tracking_uri: str | None = None,
                   version: str | None = None, log: Callable[[str], None] = print) -> SegmentResult:
    """Embed the frames artifact with the champion (or `version`), cut scenes and write the segments artifact."""
    # mlflow and torch (~4 s): validating segments imports this module and needs neither
    from mrl.champion import embed_with, resolve_champion
    from mrl.registry import _dim_metrics
    from mrl.tracking import client as mlflow_client

    frames = load_frames(frames_path)
    champion = resolve_champion(cfg, tracking_uri, version)
    shape = list(frames.pixels.shape[1:])
    if champion.kind != "images" or (champion.item_shape and shape != champion.item_shape):
        raise MRLError(f"{frames_path}: frames of shape {shape}, but {cfg.registry.model_name} v{champion.version} "
                       f"embeds {champion.kind} of shape {champion.item_shape} (set ingest.image_size and "
                       "ingest.grayscale to match, and ingest again)")
    name = cfg.registry.model_name
    scene_dim = scene_dim_for(cfg, champion.nesting_dims, lambda: _dim_metrics(
        mlflow_client(tracking_uri), name, champion.version, cfg.registry.primary_metric))
    log(f"{len(frames):,} frames of {len(frames.videos)} videos; scenes cut on the {scene_dim}-dim prefix "
        f"({cfg.video.segmenter})")
    embeddings = embed_with(champion.model_uri, frames.pixels, cfg.evaluate.batch_size, "embedding frames",
                            tracking_uri)
    meta = {"model_name": name, "model_version": champion.version, "nesting_dims": champion.nesting_dims}
    segments = build_segments(frames, embeddings, cfg.video, scene_dim, meta)
    path = save_segments(segments, output)
    return SegmentResult(path, len(frames.videos), len(frames), len(segments), scene_dim, champion.version)

"""Coarse-to-fine video search over a promoted segments collection.

Stage 1 shortlists segments on the small prefix and stage 2 re-ranks them at full dim: the items funnel, served by
the same backends (`mrl.retrieval.backends`). Stage 3 looks inside each hit at its frames (full dim) and returns the
best-matching frame's time and a tightened span: the frames around it that score within video.span_tolerance of it.
Options: at most one hit per video, and merging hits of one video that are close in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mrl.config import Config
from mrl.data.thumbnails import Thumbnails
from mrl.errors import MRLError
from mrl.progress import progress
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.backends import open_index, resolve_backend
from mrl.video.frames import iter_frames
from mrl.video.index import frames_collection

MAX_FETCH = 1000  # segments asked of the funnel when hits are grouped per video


def refine(times: np.ndarray, frame_embeddings: np.ndarray, query: np.ndarray, seg_start: float, seg_end: float,
           tolerance: float) -> dict:
    """Best frame of a segment and the contiguous span of frames scoring within `tolerance` of it."""
    if not len(times):
        return {"best_s": seg_start, "frame_score": None, "start_s": seg_start, "end_s": seg_end}
    scores = frame_embeddings.astype(np.float32) @ query
    best = int(np.argmax(scores))
    good = scores >= scores[best] - tolerance
    first, last = best, best
    while first > 0 and good[first - 1]:
        first -= 1
    while last < len(times) - 1 and good[last + 1]:
        last += 1
    end = times[last + 1] if last + 1 < len(times) else seg_end
    return {"best_s": float(times[best]), "frame_score": float(scores[best]), "start_s": float(times[first]),
            "end_s": float(end)}


def one_per_video(hits: list[dict]) -> list[dict]:
    seen, out = set(), []
    for h in hits:
        if h["video_id"] not in seen:
            seen.add(h["video_id"])
            out.append(h)
    return out


def merge_close(hits: list[dict], gap_s: float) -> list[dict]:
    """Merge hits of one video whose spans are less than gap_s apart into the better one (span: the union)."""
    out: list[dict] = []
    for h in hits:  # best first: each hit joins an earlier (better) one of its video, or starts its own
        for kept in out:
            if kept["video_id"] == h["video_id"] and h["start_s"] - kept["end_s"] < gap_s \
                    and kept["start_s"] - h["end_s"] < gap_s:
                kept["start_s"], kept["end_s"] = min(kept["start_s"], h["start_s"]), max(kept["end_s"], h["end_s"])
                kept["merged"] = [*kept.get("merged", []), h["segment_id"]]
                break
        else:
            out.append(dict(h))
    return out


class VideoIndex:
    """Segments funnel (stages 1-2, memory or milvus backend) plus the frames for stage 3: in memory with the
    memory backend, asked of Milvus per search with the milvus backend."""

    def __init__(self, client, name: str, cfg: Config, backend: str, log: Callable[[str], None] | None = None):
        self.client, self.name, self.cfg = client, name, cfg
        self.funnel = open_index(client, name, cfg.retrieval, backend, log)
        self.info = self.funnel.info
        client.load_collection(frames_collection(name))  # a no-op when loaded; needed after a restart
        self.spans, self.video_ids = self._read_spans()
        self.root = self.info.video_root  # the ingested folder (None: promoted before it was recorded)
        self.frames = self._read_frames() if backend == "memory" else None
        self.thumbnails = Thumbnails(client, name)

    def _read_spans(self) -> tuple[dict[str, tuple[float, float]], set[str]]:
        """segment id -> (start_s, end_s), and the set of video ids."""
        spans, videos = {}, set()
        iterator = self.client.query_iterator(self.name, batch_size=16_000, filter="",
                                              output_fields=["id", "label", "start_s", "end_s"])
        try:
            while page := iterator.next():
                spans |= {r["id"]: (float(r["start_s"]), float(r["end_s"])) for r in page}
                videos |= {r["label"] for r in page}
        finally:
            iterator.close()
        return spans, videos

    def _read_frames(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """video id -> (times, float16 full embeddings), time-ordered."""
        name = frames_collection(self.name)
        total = mi.row_count(self.client, name)
        ids, videos, times, full = np.empty(total, np.int64), np.empty(total, object), np.empty(total), None
        n = 0
        bar = progress(None, f"loading {name} from Milvus", "frame", total=total)
        iterator = self.client.query_iterator(name, batch_size=16_000, filter="",
                                              output_fields=["id", "video_id", "t", "full"])
        try:
            while page := iterator.next():
                if full is None:
                    full = np.empty((total, len(page[0]["full"])), dtype=np.float16)
                m = n + len(page)
                ids[n:m], videos[n:m], times[n:m] = [r["id"] for r in page], [r["video_id"] for r in page], \
                    [r["t"] for r in page]
                full[n:m] = [r["full"] for r in page]
                n = m
                bar.update(len(page))
        finally:
            iterator.close()
            bar.close()
        order = np.argsort(ids[:n], kind="stable")  # frame ids are in video, then time order
        videos, times, full = videos[order], times[order], full[order]
        bounds = np.flatnonzero(videos[1:] != videos[:-1]) + 1
        return {videos[a]: (times[a:b], full[a:b]) for a, b in zip([0, *bounds], [*bounds, n])}

    def _frames_of(self, hits: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.frames is not None:
            out = []
            for h in hits:
                times, full = self.frames.get(h["video_id"], (np.empty(0), np.empty((0, 1))))
                rows = slice(*np.searchsorted(times, [h["segment_start_s"] - 1e-6, h["segment_end_s"] - 1e-6]))
                out.append((times[rows], full[rows]))
            return out
        clauses = " or ".join(f'(video_id == "{_quoted(h["video_id"])}" and t >= {h["segment_start_s"] - 1e-6} '
                              f'and t < {h["segment_end_s"] - 1e-6})' for h in hits)
        rows = self.client.query(frames_collection(self.name), filter=clauses, output_fields=["video_id", "t", "full"])
        out = []
        for h in hits:
            mine = sorted((r["t"], r["full"]) for r in rows if r["video_id"] == h["video_id"]
                          and h["segment_start_s"] - 1e-6 <= r["t"] < h["segment_end_s"] - 1e-6)
            out.append((np.array([t for t, _ in mine]), np.array([f for _, f in mine], dtype=np.float32)))
        return out

    def search(self, query: np.ndarray, k: int = 10, per_video: bool | None = None,
               merge_gap_s: float | None = None) -> tuple[list[dict], dict[str, float]]:
        """Hits best first: segment_id, video_id, start_s/end_s (the tightened span), best_s (best frame's time),
        segment_start_s/segment_end_s, score (segment, full dim) and frame_score; per-stage timings in ms."""
        v = self.cfg.video
        per_video = v.one_per_video if per_video is None else per_video
        merge_gap_s = v.merge_gap_s if merge_gap_s is None else merge_gap_s
        query = np.asarray(query, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        keep = max(k, v.frame_rerank)  # segments whose frames are scored
        fetch = min(MAX_FETCH, len(self.spans), keep * 10) if (per_video or merge_gap_s) else keep
        rows, timings = self.funnel.search(query[None, :], fetch)
        hits = [{"segment_id": h["id"], "video_id": h["label"], "score": h["score"],
                 "segment_start_s": self.spans[h["id"]][0], "segment_end_s": self.spans[h["id"]][1]} for h in rows[0]]
        if per_video:
            hits = one_per_video(hits)
        hits = hits[:keep] if not merge_gap_s else hits
        started = time.perf_counter()
        for h, (times, full) in zip(hits, self._frames_of(hits)):
            h |= refine(times, full, query, h["segment_start_s"], h["segment_end_s"], v.span_tolerance)
        if v.frame_rerank:  # a segment's mean blurs a scene that pans across a photo; its best frame does not
            hits = sorted(hits, key=lambda h: -np.inf if h["frame_score"] is None else h["frame_score"], reverse=True)
            hits = hits if merge_gap_s else hits[:k]
        timings["refine_frames"] = 1000 * (time.perf_counter() - started)
        if merge_gap_s:
            hits = merge_close(hits, merge_gap_s)[:k]
        return hits, timings

    def vector_of(self, segment_id: str) -> np.ndarray:
        """The stored embedding of a segment; MRLError if the id is unknown."""
        if segment_id not in self.spans:
            raise MRLError(f"unknown segment id {segment_id!r} in {self.name}")
        return self.funnel.vector_of(segment_id)

    def video_file(self, video_id: str, root: str | Path | None = None) -> Path:
        """The file of an indexed video under `root` (default: the folder recorded at ingest); MRLError unless the id
        is one of this index's videos and the file, symlinks resolved, is a regular file inside that folder."""
        if video_id not in self.video_ids:
            raise MRLError(f"unknown video id {video_id[:200]!r} in {self.name}")
        root = root or self.root
        if not root:
            raise MRLError(f"collection {self.name} records no video folder (promoted before it was recorded); start "
                           "the service with --videos-dir")
        return resolve_inside(root, video_id)

    def thumbnail(self, segment_id: str) -> bytes:
        """The segment's thumbnail (PNG); MRLError if the id is unknown."""
        if segment_id not in self.spans:
            raise MRLError(f"unknown segment id {segment_id!r} in {self.name}")
        return self.thumbnails.png(segment_id)


def resolve_inside(root: str | Path, relative: str) -> Path:
    """root/relative with symlinks resolved; MRLError unless `relative` is a relative path without `..` and the
    resolved file is a regular file inside the resolved root (no way out: absolute paths, `..`, symlinks out)."""
    base = Path(root).resolve()
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative or "\0" in relative:
        raise MRLError(f"{relative[:200]!r}: not a path inside the video folder")
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base) or path == base:
        raise MRLError(f"{relative[:200]!r}: leads outside the video folder")
    if not path.is_file():
        raise MRLError(f"{relative[:200]!r}: no such video file in the video folder")
    return path


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def open_video_index(cfg: Config, milvus_uri: str | None = None, client=None,
                     log: Callable[[str], None] | None = None, one_shot: bool = False) -> VideoIndex:
    """The video index behind video.collection_prefix, with the configured backend (`one_shot`: as for items, a
    single command-line search asks Milvus directly under `auto`)."""
    client = client or mi.connect(milvus_uri)
    alias = cfg.video.collection_prefix
    name = mi.alias_target(client, alias)
    if name is None:
        raise MRLError(f"Milvus alias {alias} does not exist at {mi.resolve_milvus_uri(milvus_uri)}; index videos "
                       "first (`mrl segment`, then `mrl index promote --segments`)")
    backend = resolve_backend(cfg.retrieval.serve_backend, milvus_uri, client)
    if one_shot and cfg.retrieval.serve_backend == "auto" and mi.CollectionInfo.read(client, name).funnel.quant == "float32":
        backend = "milvus"
    return VideoIndex(client, name, cfg, backend, log)


def embed_clip(path: str | Path, model, cfg: Config, item_shape: list[int]) -> np.ndarray:
    """A short clip as one query: its frames sampled at video.fps, embedded and pooled like a segment (the
    normalized mean of the frames' normalized embeddings)."""
    channels, size = item_shape[0], item_shape[-1]
    pixels = [p for _, p in iter_frames(Path(path), cfg.video.fps, channels, size)]
    with torch.no_grad():
        embeddings = model(torch.from_numpy(np.stack(pixels))).numpy().astype(np.float32)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    mean = embeddings.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)

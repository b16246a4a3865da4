"""Video segments in Milvus, promoted like items: a versioned collection `<video.collection_prefix>_v<n>` (one per
promotion, so new footage re-indexes with the same model), verified, then the alias `<video.collection_prefix>`
moves in one call; rollback moves it back.

The segments collection is an items collection (id, label = the video id, `short` prefix, `full` embedding) with
start_s, end_s and a PNG thumbnail; a companion collection `<name>_frames` holds every sampled frame (video id,
time, full embedding) for the refinement inside segments. The funnel (d0, k0, cascade) is chosen on the segments
as for items, held-out segments querying the rest.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.config import Config
from mrl.data.thumbnails import thumbnail_png
from mrl.errors import MRLError
from mrl.progress import progress
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.backends import open_index, resolve_backend
from mrl.retrieval.choose import FunnelCost, candidate_funnels, choose_funnel, measure_funnels
from mrl.retrieval.funnel import Funnel, exact_search
from mrl.retrieval.lifecycle import drop_old_collections
from mrl.video.scenes import Segments, load_segments

FRAMES_SUFFIX = "_frames"
SEGMENT_FIELDS = {"start_s": "float", "end_s": "float", "thumbnail": "text"}
MIN_SEGMENTS_TO_CHOOSE = 200  # fewer: one full-dim search (a funnel saves nothing there, and k0 would exceed it)


def frames_collection(name: str) -> str:
    return f"{name}{FRAMES_SUFFIX}"


def create_frames_collection(client, name: str, dim: int) -> None:
    # pymilvus reads and checks $MILVUS_URI at import (mrl.retrieval.milvus_index.connect)
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("video_id", DataType.VARCHAR, max_length=1024)
    schema.add_field("t", DataType.DOUBLE)
    schema.add_field("full", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("full", index_type="FLAT", metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index)


def insert_frames(client, name: str, video_ids: np.ndarray, times: np.ndarray, embeddings: np.ndarray,
                  batch: int) -> None:
    bar = progress(None, f"inserting into {name}", "frame", total=len(times))
    for start in range(0, len(times), batch):
        end = min(start + batch, len(times))
        client.insert(name, [{"id": i, "video_id": str(video_ids[i]), "t": float(times[i]), "full": embeddings[i]}
                             for i in range(start, end)])
        bar.update(end - start)
    bar.close()


def next_collection(client, alias: str) -> str:
    """<alias>_v<n + 1> after the newest existing <alias>_v<n> (frames companions do not count)."""
    names = mi.versioned_collections(client, alias)  # oldest first, each named <alias>_v<n>
    return f"{alias}_v{int(names[-1].rsplit('_v', 1)[1]) + 1 if names else 1}"


def choose_segment_funnel(cfg: Config, segments: Segments, nesting_dims: list[int], backend: str,
                          log: Callable[[str], None]) -> tuple[FunnelCost | None, Funnel]:
    """The funnel for the segments: chosen as for items (held-out segments query the others), or exact full-dim
    search for a small archive."""
    rc = cfg.retrieval
    n = len(segments)
    if n < MIN_SEGMENTS_TO_CHOOSE:
        log(f"{n} segments: one full-dim search, no funnel (a funnel is chosen from {MIN_SEGMENTS_TO_CHOOSE} segments up)")
        return None, Funnel(nesting_dims[-1], rc.k)
    held_out = np.random.default_rng(0).permutation(n)[: min(rc.max_queries, n // 5)]
    searched = np.delete(segments.embeddings, held_out, axis=0)
    candidates = candidate_funnels(rc, nesting_dims, None if backend == "memory" else ["float32"])
    log(f"choosing the funnel for {n:,} segments among {len(candidates)} candidates on {len(held_out)} held-out segments")
    bar = progress(None, "measuring funnels", "funnel", total=len(candidates))
    costs = measure_funnels(searched, segments.embeddings[held_out], candidates, rc, progress=bar.update)
    bar.close()
    chosen = choose_funnel(costs, rc.target_recall)
    log(f"chosen funnel {chosen.funnel.name()}: recall@{rc.k} {chosen.recall:.4f}, p50 {chosen.latency_ms:.2f} ms")
    return chosen, chosen.funnel


@dataclass
class VideoPromotion:
    collection: str
    previous: str | None
    segments: int
    frames: int
    funnel: str
    verify_recall: float
    dropped: list[str]


def promote_segments(cfg: Config, segments_path: str | Path, milvus_uri: str | None = None,
                     log: Callable[[str], None] = print) -> VideoPromotion:
    """Index the segments artifact in a new collection (and its frames companion), verify, swap the video alias.
    Any failure before the swap drops what was built; the alias and the served collections are untouched."""
    alias, owner = cfg.video.collection_prefix, f"segments {Path(segments_path).name}"
    segments = load_segments(segments_path)
    dims = [int(d) for d in segments.meta["nesting_dims"]]
    client = mi.connect(milvus_uri)
    mi.acquire_promotion_lock(client, alias, owner, log)
    try:
        return _promote_segments(cfg, segments, dims, client, milvus_uri, log)
    finally:
        mi.release_promotion_lock(client, alias, owner)


def _promote_segments(cfg: Config, segments: Segments, dims: list[int], client, milvus_uri: str | None,
                      log: Callable[[str], None]) -> VideoPromotion:
    rc, alias = cfg.retrieval, cfg.video.collection_prefix
    current = mi.alias_target(client, alias)
    name = next_collection(client, alias)
    backend = resolve_backend(rc.serve_backend, milvus_uri, client)
    _, funnel = choose_segment_funnel(cfg, segments, dims, backend, log)
    info = mi.CollectionInfo(name, segments.meta["model_name"], str(segments.meta["model_version"]), funnel, dims,
                             rc.k, current, video_root=segments.meta.get("video_root") or None)
    try:
        mi.create_collection(client, info, segments.embeddings.shape[1], rc.index_type, rc.hnsw_m,
                             rc.hnsw_ef_construction, extra_fields=SEGMENT_FIELDS)
        thumbnails = [base64.b64encode(thumbnail_png(t)).decode() for t in segments.thumbnails]
        bar = progress(None, f"inserting into {name}", "segment", total=len(segments))
        mi.insert_rows(client, name, segments.ids, [str(v) for v in segments.video_ids], segments.embeddings, funnel.d0,
                       rc.insert_batch, bar.update, extra={"start_s": segments.start_s.tolist(),
                                                           "end_s": segments.end_s.tolist(), "thumbnail": thumbnails})
        bar.close()
        frame_video_ids = np.empty(len(segments.frame_times), dtype=object)
        for video_id, (a, b) in zip(segments.video_ids, segments.frame_ranges):
            frame_video_ids[a:b] = video_id
        create_frames_collection(client, frames_collection(name), segments.frame_embeddings.shape[1])
        insert_frames(client, frames_collection(name), frame_video_ids, segments.frame_times,
                      segments.frame_embeddings, rc.insert_batch)
        recall = verify_segments(client, cfg, name, segments, backend, log)
    except BaseException:
        drop_video_collection(client, name)
        raise
    try:
        mi.swap_alias(client, alias, name, expected=current)
    except MRLError:
        drop_video_collection(client, name)
        raise
    log(f"alias {alias} -> {name} ({len(segments):,} segments of {len(segments.videos)} videos, "
        f"{len(segments.frame_times):,} frames, verified recall@{rc.k} {recall:.4f})")
    dropped = drop_old_video_collections(client, alias, rc.keep_last, rc.drop_grace_s, log)
    return VideoPromotion(name, current, len(segments), len(segments.frame_times), funnel.name(), recall, dropped)


def verify_segments(client, cfg: Config, name: str, segments: Segments, backend: str,
                    log: Callable[[str], None]) -> float:
    """Row counts of both collections, then recall@k of sample segments through the serving backend's funnel (stages
    1-2; the frames are not read) against exact search over the artifact (each query's own segment left out of both)."""
    for collection, expected in ((name, len(segments)), (frames_collection(name), len(segments.frame_times))):
        rows = mi.row_count(client, collection)
        if rows != expected:
            raise MRLError(f"Milvus collection {collection}: {rows} rows after insert, expected {expected}")
    rc = cfg.retrieval
    sample = np.random.default_rng(1).permutation(len(segments))[: rc.verify_queries]
    queries = segments.embeddings[sample]
    k = min(rc.k, len(segments) - 1)
    top = exact_search(segments.embeddings, queries, k + 1)
    funnel = open_index(client, name, rc, backend, log)
    recalls = []
    for q, own, truth_rows in zip(queries, segments.ids[sample], top.indices):
        truth = [segments.ids[r] for r in truth_rows if segments.ids[r] != own][:k]
        hits, _ = funnel.search(q[None, :], k + 1)
        found = [h["id"] for h in hits[0] if h["id"] != own][:k]
        recalls.append(len(set(found) & set(truth)) / max(k, 1))
    recall = float(np.mean(recalls))
    if recall < rc.target_recall:
        raise MRLError(f"Milvus collection {name}: segment recall@{k} {recall:.4f} on {len(sample)} sample segments "
                       f"is below retrieval.target_recall {rc.target_recall}")
    return recall


def drop_video_collection(client, name: str) -> None:
    for collection in (name, frames_collection(name)):
        if collection in client.list_collections():
            client.drop_collection(collection)


def drop_old_video_collections(client, alias: str, keep_last: int, grace_s: float = 0.0, log=None) -> list[str]:
    dropped = drop_old_collections(client, alias, keep_last, grace_s, log)
    for name in dropped:
        drop_video_collection(client, name)
    return dropped

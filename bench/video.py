"""Video search benchmark on a synthetic archive with ground truth: scene cuts on the cheap prefix, instance search
through the served coarse-to-fine path against an exact search over every frame, ingest throughput and index size.

Corpus: `mrl.video.synth` videos of Fashion-MNIST *test* items (default 1,000 videos x mean 75 s, 20.8 h; 20% of them
continuous, dashcam-like footage without cuts), cached under artifacts/bench/video-<params hash>/ with the frames
artifact and the frame embeddings, so a rerun skips generation, decoding and embedding (their throughput is then
the one measured when the cache was built, and the report says so).

1. Scene boundaries: `cut_scenes` on the 8, 16, 64 and full-dim prefixes over a sweep of thresholds; F1 at +-0.5 s
   (one-to-one matching of predicted cuts to true boundaries) on the "scenes" videos, recall on hard cuts and on
   fades apart, false cuts per hour on the continuous videos.
2. Instance search through the served path: the segments (default config) promoted into a temporary Milvus Lite
   file with `promote_segments`, opened with `open_video_index` (memory backend); queries are differently augmented
   views of items shown in the corpus. Relevant: a hit in a video showing the item whose span has temporal
   IoU >= 0.5 with the item's true span.
3. Time per query, one query per call on one thread: `VideoIndex.search` against an exact search over every
   frame's full embedding (FAISS flat inner product), with the recall each reaches.
4. Ingest throughput (decode, embed) and index size per hour of video.

    python bench/video.py --model artifacts/kfp/<run>/train-op/model --out bench/results/video.md
    python bench/video.py --small   # 60 videos x 40 s: a quick check of the whole path
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mrl.checkpoint import load_model
from mrl.config import load_config
from mrl.evaluate import embed_items
from mrl.metrics import average_precision_at_k
from mrl.retrieval.funnel import normalized_prefix
from mrl.video.frames import ingest_videos, load_frames
from mrl.video.index import promote_segments
from mrl.video.scenes import build_segments, cut_scenes, save_segments
from mrl.video.search import open_video_index
from mrl.video.synth import augmented_query, generate_corpus, load_ground_truth, load_test_split

THREADS = 2  # the machine's cores: generation, decoding, embedding
CUT_DIMS = [8, 16, 64]  # prefixes compared for the cuts, besides the full dim
THRESHOLDS = [0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98]  # cosine thresholds swept (the default is added if absent)
TOLERANCE_S = 0.5  # a predicted cut matches a true boundary within this many seconds
MIN_TIOU = 0.5  # a hit is relevant if its span overlaps a true span of the item by this temporal IoU
K = 10  # hits per query; mAP@K
EXACT_FRAMES = 200  # frames the exact search returns: enough for K distinct spans after grouping
SYNTH = {"fps": 10, "size": 64, "continuous_share": 0.2, "codec": "h264"}  # generate_corpus's settings, in the hash


# --- metrics ------------------------------------------------------------------------------------

def match_boundaries(predicted: np.ndarray, truth: np.ndarray, tolerance: float) -> np.ndarray:
    """One-to-one matching of sorted predicted times to sorted true times within +-tolerance; returns a bool per true
    boundary (matched or not). Greedy from the left is a maximum matching here: every window has the same width."""
    matched = np.zeros(len(truth), bool)
    p = 0
    for j, t in enumerate(truth):
        while p < len(predicted) and predicted[p] < t - tolerance:
            p += 1  # too early for this boundary and for every later one: a false cut
        if p < len(predicted) and predicted[p] <= t + tolerance:
            matched[j] = True
            p += 1
    return matched


def tiou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def judge_spans(hits: list[dict], spans: list[tuple[str, float, float]], start: str, end: str) -> list[bool]:
    """Relevance of ranked hits: a hit matches the unmatched true span (video, start, end) of the item it overlaps
    most, if that temporal IoU >= MIN_TIOU; each true span counts once (a second hit on it is not relevant)."""
    used: set[int] = set()
    out = []
    for h in hits:
        best, best_iou = None, MIN_TIOU
        for j, (video, s, e) in enumerate(spans):
            if j not in used and video == h["video_id"]:
                iou = tiou(h[start], h[end], s, e)
                if iou >= best_iou:
                    best, best_iou = j, iou
        if best is not None:
            used.add(best)
        out.append(best is not None)
    return out


def judge_points(hits: list[dict], spans: list[tuple[str, float, float]]) -> list[bool]:
    """Relevance as the exact frame search is judged: the hit's best frame lies inside a true span of the item (in
    that video), each true span counted once."""
    used: set[int] = set()
    out = []
    for h in hits:
        j = next((j for j, (video, s, e) in enumerate(spans)
                  if j not in used and video == h["video_id"] and s <= h["best_s"] < e), None)
        if j is not None:
            used.add(j)
        out.append(j is not None)
    return out


def rank_metrics(relevant: list[list[bool]], n_relevant: np.ndarray) -> dict[str, float]:
    """R@1, R@5 (share of queries with a relevant hit in the top 1 / 5) and mAP@K (AP over the top K, normalized by
    min(relevant in the corpus, K))."""
    rel = np.zeros((len(relevant), K), bool)
    for i, r in enumerate(relevant):
        rel[i, :min(K, len(r))] = r[:K]
    return {"r1": float(rel[:, 0].mean()), "r5": float(rel[:, :5].any(axis=1).mean()),
            "map": float(average_precision_at_k(rel, n_relevant, K).mean())}


def percentile_ms(latency: list[float]) -> tuple[float, float]:
    return float(np.median(latency)), float(np.percentile(latency, 99))


# --- corpus and caches --------------------------------------------------------------------------

def corpus_dir(args) -> Path:
    params = {"videos": args.videos, "mean_s": args.mean_s, "seed": args.seed, **SYNTH}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return Path(args.cache_dir) / f"video-{digest}"


def cached_step(meta_path: Path, outputs: list[Path], run) -> dict:
    """Run `run()` (returns a dict of what was measured) unless its outputs and its measurements exist from an
    earlier run; the measurements are saved beside the outputs, with when they were taken."""
    if meta_path.exists() and all(p.exists() for p in outputs):
        return json.loads(meta_path.read_text()) | {"cached": True}
    measured = run() | {"measured_at": datetime.datetime.now().isoformat(timespec="seconds")}
    meta_path.write_text(json.dumps(measured, indent=1))
    return measured | {"cached": False}


# --- the benchmark ------------------------------------------------------------------------------

def scene_boundaries(frames, embeddings: np.ndarray, truth: dict, slices: dict, dims: list[int],
                     thresholds: list[float], cfg, log) -> dict:
    """Per (dim, threshold): matched / predicted / true boundaries on the scenes videos, per transition kind, and
    cuts on the continuous videos. Cuts as the segmenter detects them (min_scene_s merge) but without its
    max_scene_s even split, a length policy that would put a "cut" every 30 s of any footage."""
    videos = truth["videos"]
    out: dict = {}
    for dim in dims:
        prefixes = normalized_prefix(embeddings, dim)
        for thr in thresholds:
            c = defaultdict(float)
            for v in videos:
                rows = slices[v["file"]]
                times = frames.times[rows]
                starts = cut_scenes(times, prefixes[rows], thr, cfg.video.min_scene_s, math.inf)[1:]
                predicted = np.array([(times[i - 1] + times[i]) / 2 for i in starts])  # between frames i-1 and i
                if v["kind"] == "continuous":  # no true cut: every cut is false; some fall where the item changes
                    drift = np.array([b["t_s"] for b in v["boundaries"]])
                    c["continuous_cuts"] += len(predicted)
                    c["continuous_near_drift"] += match_boundaries(predicted, drift, TOLERANCE_S).sum()
                    continue
                true_t = np.array([b["t_s"] for b in v["boundaries"]])
                kinds = np.array([b["transition"] for b in v["boundaries"]])
                matched = match_boundaries(predicted, true_t, TOLERANCE_S)
                c["tp"] += matched.sum()
                c["predicted"] += len(predicted)
                c["true"] += len(true_t)
                for kind in ("cut", "fade"):
                    c[f"{kind}_true"] += (kinds == kind).sum()
                    c[f"{kind}_tp"] += matched[kinds == kind].sum()
            tp = c["tp"]
            out[(dim, thr)] = dict(c) | {
                "precision": tp / max(c["predicted"], 1), "recall": tp / max(c["true"], 1),
                "f1": 2 * tp / max(c["predicted"] + c["true"], 1),
                "cut_recall": c["cut_tp"] / max(c["cut_true"], 1), "fade_recall": c["fade_tp"] / max(c["fade_true"], 1)}
        log(f"  dim {dim}: F1 " + ", ".join(f"{thr}: {out[(dim, thr)]['f1']:.3f}" for thr in thresholds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="trained checkpoint (default: the newest artifacts/kfp/mrl-training-*/train-op/model)")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--videos", type=int, default=1000, help="videos in the corpus")
    parser.add_argument("--mean-s", type=float, default=75.0,
                        help="mean video duration, seconds (75: 20.8 h over 1,000 videos at seed 0)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (queries use seed + 1)")
    parser.add_argument("--queries", type=int, default=1000, help="instance queries (distinct items of the corpus)")
    parser.add_argument("--scene-dim", type=int, default=8, help="prefix the indexed segments are cut on")
    parser.add_argument("--small", action="store_true", help="60 videos x 40 s, 200 queries: a quick check")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (video.*, retrieval.*), repeatable")
    parser.add_argument("--cache-dir", default="artifacts/bench")
    parser.add_argument("--out", default="bench/results/video.md")
    args = parser.parse_args()
    if args.small:
        args.videos, args.mean_s, args.queries = 60, 40.0, min(args.queries, 200)
        if args.out == parser.get_default("out"):
            args.out = str(Path(args.cache_dir) / "video-small.md")  # not a result to keep
    if args.model is None:
        found = sorted(Path("artifacts/kfp").glob("mrl-training-*/train-op/model"))
        if not found:
            parser.error("no trained model under artifacts/kfp/; run `make demo` first or pass --model")
        args.model = str(found[-1])
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {line}", flush=True)

    @contextmanager
    def phase(name: str):
        log(f"== {name}")
        t0 = time.perf_counter()
        yield
        phases[name] = time.perf_counter() - t0
        log(f"== {name}: {phases[name]:.1f} s")

    cfg = load_config(None, args.overrides)
    model = load_model(args.model)
    dims = model.nesting_dims
    full_dim = dims[-1]
    if args.scene_dim not in dims:
        parser.error(f"--scene-dim {args.scene_dim} is not a nesting dim of the model ({dims})")
    cut_dims = [d for d in CUT_DIMS if d in dims and d != full_dim] + [full_dim]
    thresholds = sorted({*THRESHOLDS, cfg.video.cut_threshold})
    cache = corpus_dir(args)
    video_dir = cache / "videos"
    cache.mkdir(parents=True, exist_ok=True)
    model_digest = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()[:12]

    # --- corpus, frames, embeddings (cached) ---
    with phase("generate corpus"):
        def generate() -> dict:
            t0 = time.perf_counter()
            generate_corpus(video_dir, args.videos, args.mean_s, args.data_dir, args.seed, workers=THREADS, **SYNTH)
            return {"seconds": time.perf_counter() - t0}
        gen = cached_step(cache / "generate.json", [video_dir / "ground_truth.json"], generate)
    truth = load_ground_truth(video_dir)
    hours = sum(v["duration_s"] for v in truth["videos"]) / 3600
    log(f"corpus {cache}: {len(truth['videos'])} videos, {hours:.2f} h "
        f"({'cached' if gen['cached'] else 'generated'} in {gen['seconds']:.0f} s)")

    frames_path = cache / f"frames-fps{cfg.video.fps:g}-{cfg.ingest.image_size}.npz"
    with phase("decode (ingest_videos)"):
        def decode() -> dict:
            result = ingest_videos(video_dir, frames_path, cfg.video, cfg.ingest, log)
            return {"seconds": result.seconds, "frames": result.frames, "hours": result.hours}
        ingest = cached_step(frames_path.with_suffix(".json"), [frames_path], decode)
        frames = load_frames(frames_path)
    log(f"{len(frames):,} frames sampled at {frames.fps:g} fps: {ingest['frames'] / ingest['seconds']:,.0f} frames/s, "
        f"{ingest['hours'] / (ingest['seconds'] / 3600):,.0f} h of video per hour")

    emb_path = cache / f"embeddings-{frames_path.stem}-{model_digest}.npy"
    with phase("embed frames"):
        def embed() -> dict:
            t0 = time.perf_counter()
            emb = embed_items(model.encoder, frames.pixels, 1024, "embedding frames")
            seconds = time.perf_counter() - t0
            np.save(emb_path, emb)
            return {"seconds": seconds, "frames": len(emb)}
        embed_run = cached_step(emb_path.with_suffix(".json"), [emb_path], embed)
        embeddings = normalized_prefix(np.load(emb_path), full_dim)
    log(f"embedded at {embed_run['frames'] / embed_run['seconds']:,.0f} frames/s")
    # rows of each video (frames are in video order, then time order)
    bounds = np.flatnonzero(frames.video_ids[1:] != frames.video_ids[:-1]) + 1
    slices = {str(frames.video_ids[a]): slice(a, b) for a, b in zip([0, *bounds], [*bounds, len(frames)])}
    missing = [v["file"] for v in truth["videos"] if v["file"] not in slices]
    if missing:
        raise SystemExit(f"error: {frames_path}: no frames of {missing[:3]} (stale cache? delete {cache})")

    # --- 1. scene boundaries ---
    with phase("scene boundaries"):
        cuts = scene_boundaries(frames, embeddings, truth, slices, cut_dims, thresholds, cfg, log)

    # --- 2. segments, promote, open ---
    tmp = tempfile.TemporaryDirectory(prefix="bench-video-")
    milvus_uri = str(Path(tmp.name) / "milvus.db")
    with phase("build segments"):
        meta = {"model_name": "bench-video", "model_version": model_digest, "nesting_dims": dims}
        segments = build_segments(frames, embeddings, cfg.video, args.scene_dim, meta)
        segments_path = save_segments(segments, Path(tmp.name) / "segments.npz")
    log(f"{len(segments):,} segments ({len(segments) / hours:,.0f} per hour)")
    with phase("promote (Milvus Lite)"):
        promotion = promote_segments(cfg, segments_path, milvus_uri, log)
    with phase("open_video_index"):
        index = open_video_index(cfg, milvus_uri, log=log)

    # --- queries ---
    images, labels = load_test_split(args.data_dir)
    spans_of: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    class_spans = np.zeros(10, np.int64)
    video_scenes = {}  # video -> (span starts, span labels, span item indices)
    for v in truth["videos"]:
        for s in v["scenes"]:
            spans_of[s["item_index"]].append((v["file"], s["start_s"], s["end_s"]))
            class_spans[s["label"]] += 1
        video_scenes[v["file"]] = (np.array([s["start_s"] for s in v["scenes"]]),
                                   np.array([s["label"] for s in v["scenes"]]),
                                   np.array([s["item_index"] for s in v["scenes"]]))
    rng = np.random.default_rng(args.seed + 1)
    shown = np.array(sorted(spans_of))
    items = rng.choice(shown, min(args.queries, len(shown)), replace=False)
    with phase("embed queries"):
        query_images = np.stack([augmented_query(images[i], rng) for i in items])[:, None]
        queries = normalized_prefix(embed_items(model.encoder, query_images, 1024, "embedding queries"), full_dim)
    query_labels = labels[items]
    n_spans = np.array([len(spans_of[i]) for i in items])
    log(f"{len(items)} queries; true spans per query: mean {n_spans.mean():.2f}, max {n_spans.max()}")

    def class_at(video: str, t: float) -> int:
        starts, span_labels, _ = video_scenes[video]
        return int(span_labels[max(0, np.searchsorted(starts, t + 1e-9) - 1)])

    # Oracle queries: a frame of the video itself (the middle frame of the item's first span), to tell apart what
    # the search path loses from what the query's embedding does (an augmented view of the item).
    oracle = []
    for i in items:
        video, s0, e0 = spans_of[i][0]
        rows = np.arange(slices[video].start, slices[video].stop)
        rows = rows[(frames.times[rows] >= s0) & (frames.times[rows] < e0)]
        oracle.append(embeddings[rows[len(rows) // 2]])
    oracle = np.stack(oracle)
    kind_of = {v["file"]: v["kind"] for v in truth["videos"]}
    oracle_kind = np.array([kind_of[spans_of[i][0][0]] for i in items])  # the kind of video each oracle frame is from

    def coarse_to_fine(qs: np.ndarray) -> tuple[list[list[dict]], list[float], dict[str, list[float]]]:
        """VideoIndex.search one query per call on one thread (BLAS, OpenMP and FAISS), as the service runs it."""
        with threadpool_limits(1):
            faiss.omp_set_num_threads(1)
            index.search(qs[0], K)  # warm-up
            latency, stages, results = [], defaultdict(list), []
            for q in qs:
                t0 = time.perf_counter()
                hits, timings = index.search(q, K)
                latency.append(1000 * (time.perf_counter() - t0))
                results.append(hits)
                for name, ms in timings.items():
                    stages[name].append(ms)
        faiss.omp_set_num_threads(THREADS)
        return results, latency, stages

    def judge_coarse(results: list[list[dict]]) -> dict:
        def metrics(judge) -> dict:
            return rank_metrics([judge(h, spans_of[i]) for h, i in zip(results, items)], n_spans)
        class_rel = [[class_at(h["video_id"], h["best_s"]) == lab for h in hits]
                     for hits, lab in zip(results, query_labels)]
        first = np.array([bool(judge_points(h, spans_of[i])[:1] == [True]) for h, i in zip(results, items)])
        return {"tight": metrics(lambda h, sp: judge_spans(h, sp, "start_s", "end_s")),
                "loose": metrics(lambda h, sp: judge_spans(h, sp, "segment_start_s", "segment_end_s")),
                "points": metrics(judge_points), "class_map": rank_metrics(class_rel, class_spans[query_labels])["map"],
                "top1": first}

    # --- 2 + 3. coarse-to-fine search through VideoIndex ---
    with phase("coarse-to-fine search"):
        results, latency, stages = coarse_to_fine(queries)
        coarse = judge_coarse(results)
        coarse_oracle = judge_coarse(coarse_to_fine(oracle)[0])
    span_s = np.array([h["end_s"] - h["start_s"] for hits in results for h in hits])
    seg_s = np.array([h["segment_end_s"] - h["segment_start_s"] for hits in results for h in hits])
    t = coarse["tight"]
    log(f"  tightened spans: R@1 {t['r1']:.3f} R@5 {t['r5']:.3f} mAP@{K} {t['map']:.3f}; segment spans: R@1 "
        f"{coarse['loose']['r1']:.3f}; best frame: R@1 {coarse['points']['r1']:.3f}; class mAP@{K} "
        f"{coarse['class_map']:.3f}; p50 {np.median(latency):.2f} ms")

    # --- 3. exact search over every frame at full dim ---
    flat = faiss.IndexFlatIP(full_dim)
    flat.add(embeddings)

    def exact_frames(qs: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
        """Top EXACT_FRAMES frames by inner product at full dim, mapped to video and time; one query per call on
        one thread."""
        with threadpool_limits(1):
            faiss.omp_set_num_threads(1)
            flat.search(qs[:1], EXACT_FRAMES)  # warm-up
            latency, found = [], []
            for q in qs:
                t0 = time.perf_counter()
                _, rows = flat.search(normalized_prefix(q[None, :], full_dim), EXACT_FRAMES)
                hit = (frames.video_ids[rows[0]], frames.times[rows[0]])  # what a caller gets: video and time
                latency.append(1000 * (time.perf_counter() - t0))
                found.append(hit)
        faiss.omp_set_num_threads(THREADS)
        return found, latency

    def judge_exact(found: list[tuple[np.ndarray, np.ndarray]]) -> dict:
        """Frames grouped by the true span they lie in (first K spans); relevant: a span of the query's item."""
        relevant, classes, distinct = [], [], []
        for (videos, times), item, lab in zip(found, items, query_labels):
            seen, rel, cls = set(), [], []
            for video, t in zip(videos, times):
                starts, span_labels, span_items = video_scenes[str(video)]
                j = max(0, int(np.searchsorted(starts, t + 1e-9)) - 1)
                if (video, j) in seen:
                    continue  # another frame of a span already returned
                seen.add((video, j))
                rel.append(int(span_items[j]) == item)
                cls.append(int(span_labels[j]) == lab)
                if len(rel) == K:
                    break
            relevant.append(rel)
            classes.append(cls)
            distinct.append(len(rel))
        return rank_metrics(relevant, n_spans) | {"distinct": float(np.mean(distinct)),
                                                  "top1": np.array([bool(rel[:1] == [True]) for rel in relevant]),
                                                  "class_map": rank_metrics(classes, class_spans[query_labels])["map"]}

    with phase("exact frame search"):
        found, exact_latency = exact_frames(queries)
        exact = judge_exact(found)
        exact_oracle = judge_exact(exact_frames(oracle)[0])
    log(f"  exact: R@1 {exact['r1']:.3f} R@5 {exact['r5']:.3f} mAP@{K} {exact['map']:.3f}; "
        f"p50 {np.median(exact_latency):.2f} ms")

    # --- 4. index size ---
    frames_rows = sum(len(t) for t, _ in index.frames.values())
    frames_table = sum(t.nbytes + f.nbytes for t, f in index.frames.values())
    funnel_bytes = index.funnel.bytes_per_item()
    segment_bytes = funnel_bytes * len(index.funnel.ids)
    index.client.close()
    milvus_bytes = sum(p.stat().st_size for p in Path(tmp.name).rglob("*") if p.is_file() and p != segments_path)
    tmp.cleanup()

    write_report(args, cfg, dict(
        truth=truth, hours=hours, frames=frames, segments=segments, cuts=cuts, cut_dims=cut_dims,
        thresholds=thresholds, promotion=promotion, coarse=coarse, coarse_oracle=coarse_oracle, latency=latency,
        stages=stages, exact=exact, exact_oracle=exact_oracle, oracle_kind=oracle_kind, exact_latency=exact_latency,
        span_s=span_s, seg_s=seg_s, n_queries=len(items), n_spans=n_spans, gen=gen, ingest=ingest, embed_run=embed_run,
        frames_rows=frames_rows, frames_table=frames_table, segment_bytes=segment_bytes, funnel_bytes=funnel_bytes,
        milvus_bytes=milvus_bytes, phases=phases, total_s=time.perf_counter() - started))


def write_report(args, cfg, r: dict) -> None:
    videos, frames, cuts, cut_dims, thresholds = r["truth"]["videos"], r["frames"], r["cuts"], r["cut_dims"], r["thresholds"]
    hours, n_segments = r["hours"], len(r["segments"])
    scenes_videos = [v for v in videos if v["kind"] == "scenes"]
    cont_hours = sum(v["duration_s"] for v in videos if v["kind"] == "continuous") / 3600
    n_boundaries = sum(len(v["boundaries"]) for v in scenes_videos)
    n_fades = sum(b["transition"] == "fade" for v in scenes_videos for b in v["boundaries"])
    drift_per_h = sum(len(v["boundaries"]) for v in videos if v["kind"] == "continuous") / max(cont_hours, 1e-9)
    default = cfg.video.cut_threshold
    full_dim = cut_dims[-1]
    now = datetime.datetime.now().astimezone()
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    phases = r["phases"]

    def note(step: dict) -> str:
        return f"cached, measured {step['measured_at']}" if step["cached"] else "this run"

    lines = ["# Video search: scene cuts on the prefix, coarse-to-fine instance search, ingest and index cost", "",
             f"Measured by `bench/video.py` on {now:%Y-%m-%d %H:%M %Z}: {platform.system()} {platform.machine()}, "
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (the machine was shared). "
             f"Command: `{command}`. Total wall time {r['total_s'] / 60:.1f} min.", "",
             "## Corpus", "",
             f"Synthetic videos from `mrl.video.synth` (Fashion-MNIST *test* items, which the model never trained on), "
             f"{SYNTH['size']}x{SYNTH['size']} px at {SYNTH['fps']} fps, h264, {SYNTH['continuous_share']:.0%} of them "
             f"continuous (a strip of items panning, no cuts); sampled at {frames.fps:g} fps by `ingest_videos`, "
             f"embedded by `{args.model}`.", "",
             "| videos | scenes / continuous | hours | true spans | boundaries (scenes videos): cut / fade | sampled "
             "frames | segments | seed |", "|---:|---|---:|---:|---|---:|---:|---:|",
             f"| {len(videos):,} | {len(scenes_videos):,} / {len(videos) - len(scenes_videos):,} | {hours:.2f} | "
             f"{sum(len(v['scenes']) for v in videos):,} | {n_boundaries - n_fades:,} / {n_fades:,} | {len(frames):,} | "
             f"{n_segments:,} | {args.seed} |", ""]

    # 1. boundaries
    best = {d: max(thresholds, key=lambda t, d=d: cuts[(d, t)]["f1"]) for d in cut_dims}
    f_small, f_full = cuts[(cut_dims[0], default)]["f1"], cuts[(full_dim, default)]["f1"]
    b_small, b_full = cuts[(cut_dims[0], best[cut_dims[0]])]["f1"], cuts[(full_dim, best[full_dim])]["f1"]
    per_h = 1 / max(cont_hours, 1e-9)
    lines += ["## 1. Scene boundaries: the cheap prefix against the full embedding", "",
              f"`cut_scenes` (a cut where consecutive frames' normalized prefixes fall below the cosine threshold; "
              f"scenes under min_scene_s = {cfg.video.min_scene_s:g} s merged) on each prefix. F1 counts a predicted "
              f"cut (placed midway between the two frames it separates) as correct if it is matched one-to-one to a "
              f"true boundary within +-{TOLERANCE_S:g} s, over the {len(scenes_videos):,} scenes videos "
              f"({n_boundaries:,} boundaries); recall is also given per transition (hard cut, cross-fade). False "
              f"cuts per hour: every cut on the {len(videos) - len(scenes_videos)} continuous videos "
              f"({cont_hours:.2f} h, no true cut; the item in view changes {drift_per_h:.0f} times an hour, and the "
              f"share of false cuts within +-{TOLERANCE_S:g} s of such a change is given). The even split of scenes "
              f"longer than max_scene_s = {cfg.video.max_scene_s:g} s is left out: a length policy, not a detection.",
              "",
              f"At the default threshold {default:g}, the {cut_dims[0]}-dim prefix reaches F1 {f_small:.3f} and the "
              f"full {full_dim}-dim embedding {f_full:.3f} ({f_small - f_full:+.3f}); at each one's best threshold of "
              f"the sweep, {b_small:.3f} and {b_full:.3f} ({b_small - b_full:+.3f}). On continuous footage every "
              f"prefix cuts {min(cuts[(d, default)]['continuous_cuts'] for d in cut_dims) * per_h:,.0f} to "
              f"{max(cuts[(d, default)]['continuous_cuts'] for d in cut_dims) * per_h:,.0f} times an hour at "
              f"{default:g}.", "",
              f"| prefix dims | F1 @ {default:g} | precision | recall | recall: cuts | recall: fades | false cuts/h "
              f"(continuous) | of those, at an item change | best threshold | F1 there | recall there: cuts / fades "
              f"| false cuts/h there |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for d in cut_dims:
        c, b = cuts[(d, default)], cuts[(d, best[d])]
        lines.append(f"| {d} | {c['f1']:.3f} | {c['precision']:.3f} | {c['recall']:.3f} | {c['cut_recall']:.3f} | "
                     f"{c['fade_recall']:.3f} | {c['continuous_cuts'] * per_h:,.0f} | "
                     f"{c['continuous_near_drift'] / max(c['continuous_cuts'], 1):.0%} | {best[d]:g} | "
                     f"{b['f1']:.3f} | {b['cut_recall']:.3f} / {b['fade_recall']:.3f} | "
                     f"{b['continuous_cuts'] * per_h:,.0f} |")
    lines += ["", "F1 over the sweep (rows: prefix dims; columns: cosine threshold):", "",
              "| dims | " + " | ".join(f"{t:g}" for t in thresholds) + " |",
              "|---:|" + "---:|" * len(thresholds)]
    for d in cut_dims:
        lines.append(f"| {d} | " + " | ".join(f"{cuts[(d, t)]['f1']:.3f}" for t in thresholds) + " |")

    # 2. instance search
    c, o, n_spans, promotion = r["coarse"], r["coarse_oracle"], r["n_spans"], r["promotion"]
    tight, loose, points = c["tight"], c["loose"], c["points"]
    lines += ["", "## 2. Instance search through the served path", "",
              f"The segments (segmenter {cfg.video.segmenter}, cut on the {args.scene_dim}-dim prefix at "
              f"{default:g}) promoted with `promote_segments` into a temporary Milvus Lite file (funnel chosen: "
              f"`{promotion.funnel}`, verified recall@{cfg.retrieval.k} {promotion.verify_recall:.4f}) and searched "
              f"with `open_video_index(...).search(query, k={K})` (memory backend: FAISS shortlist on the prefix, "
              f"full-dim re-rank, then the best frame and a tightened span inside each hit). {r['n_queries']:,} "
              f"queries, one per distinct item shown in the corpus (seed {args.seed + 1}), each a differently "
              f"augmented view (`augmented_query`: shift, scale, brightness, noise); an item has "
              f"{n_spans.mean():.2f} true spans on average (max {n_spans.max()}). A hit is relevant if it is in a "
              f"video showing the item and its span overlaps the item's true span with temporal IoU >= "
              f"{MIN_TIOU:g}, each true span matched once. R@k: share of queries with a relevant hit in the top k; "
              f"mAP@{K}: AP over the top {K}, normalized by min(true spans, {K}). Class mAP@{K}: a hit is relevant "
              f"if the true class at its best frame's time is the query's class. Oracle rows: the same judgement for "
              f"oracle queries, the embedding of a frame of the item's own span (its middle frame), which separates "
              f"what the search path loses from what the query's embedding does.", "",
              f"With the tightened span (stage 3) R@1 is {tight['r1']:.3f}, with the whole segment "
              f"{loose['r1']:.3f}; hit spans have a median of {np.median(r['span_s']):.1f} s tightened and "
              f"{np.median(r['seg_s']):.1f} s per segment. Class mAP@{K} is {c['class_map']:.3f}. With oracle "
              f"queries, R@1 is {o['tight']['r1']:.3f} (tightened) and {o['points']['r1']:.3f} (best frame).", "",
              f"| queries | span judged | R@1 | R@5 | mAP@{K} | class mAP@{K} |", "|---|---|---:|---:|---:|---:|"]
    for name, m in (("augmented views", c), ("oracle: a frame of the span", o)):
        lines += [f"| {name} | tightened (stage 3: start_s, end_s), IoU >= {MIN_TIOU:g} | {m['tight']['r1']:.3f} | "
                  f"{m['tight']['r5']:.3f} | {m['tight']['map']:.3f} | {m['class_map']:.3f} |",
                  f"| {name} | whole segment (segment_start_s, segment_end_s), IoU >= {MIN_TIOU:g} | "
                  f"{m['loose']['r1']:.3f} | {m['loose']['r5']:.3f} | {m['loose']['map']:.3f} | |",
                  f"| {name} | best frame (best_s) inside a true span, no IoU | {m['points']['r1']:.3f} | "
                  f"{m['points']['r5']:.3f} | {m['points']['map']:.3f} | |"]

    # 3. time per query
    e, eo = r["exact"], r["exact_oracle"]
    p50, p99 = percentile_ms(r["latency"])
    e50, e99 = percentile_ms(r["exact_latency"])
    stage_txt = ", ".join(f"{name} {np.median(ms):.2f}" for name, ms in r["stages"].items())
    lines += ["", "## 3. Time per query: coarse-to-fine against an exact search over every frame", "",
              f"Both on the same {r['n_queries']:,} queries, in this run, one query per call on one thread (BLAS and "
              f"OpenMP limited to 1, as the service runs). Coarse-to-fine: `VideoIndex.search(query, k={K})` over "
              f"{n_segments:,} segments, the whole call. Exact: FAISS `IndexFlatIP` over all {len(frames):,} frame "
              f"embeddings at {full_dim} dims, top {EXACT_FRAMES} frames mapped to video and time. Both are judged "
              f"alike: a result is relevant if its (best) frame lies inside a true span of the query's item, each "
              f"span once; the exact search's frames are grouped by the true span they lie in (ground truth, not "
              f"timed: generous to the baseline) and the first {K} spans kept ({e['distinct']:.1f} on average).", "",
              f"The coarse-to-fine search is {e50 / p50:.1f}x faster at p50 ({e99 / p99:.1f}x at p99), at R@1 "
              f"{points['r1']:.3f} vs {e['r1']:.3f} and R@5 {points['r5']:.3f} vs {e['r5']:.3f} (oracle queries: "
              f"R@1 {o['points']['r1']:.3f} vs {eo['r1']:.3f}; by the kind of video the oracle frame comes from: "
              + "; ".join(f"{kind} ({mask.sum()} queries) {o['top1'][mask].mean():.3f} vs {eo['top1'][mask].mean():.3f}"
                          for kind in ("scenes", "continuous") if (mask := r["oracle_kind"] == kind).any()) + ").", "",
              f"| search | p50 ms | p99 ms | speed-up vs exact (p50) | R@1 | R@5 | mAP@{K} | class mAP@{K} | oracle "
              f"queries: R@1 | R@5 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| coarse-to-fine (`VideoIndex.search`) | {p50:.2f} | {p99:.2f} | {e50 / p50:.1f}x | "
              f"{points['r1']:.3f} | {points['r5']:.3f} | {points['map']:.3f} | {c['class_map']:.3f} | "
              f"{o['points']['r1']:.3f} | {o['points']['r5']:.3f} |",
              f"| exact, every frame at {full_dim} dims | {e50:.2f} | {e99:.2f} | 1x | {e['r1']:.3f} | "
              f"{e['r5']:.3f} | {e['map']:.3f} | {e['class_map']:.3f} | {eo['r1']:.3f} | {eo['r5']:.3f} |", "",
              f"Coarse-to-fine stages, p50 ms: {stage_txt}."]

    # 4. ingest and index size
    gen, ingest, embed_run = r["gen"], r["ingest"], r["embed_run"]
    decode_fps = ingest["frames"] / ingest["seconds"]
    embed_fps = embed_run["frames"] / embed_run["seconds"]
    memory = r["segment_bytes"] + r["frames_table"]
    lines += ["", "## 4. Ingest throughput and index size per hour of video", "",
              f"Wall time on {THREADS} cores. Decode: `ingest_videos` (PyAV decoding every frame of the "
              f"{SYNTH['fps']} fps footage, keeping {frames.fps:g} fps downscaled to 28x28, writing the frames "
              f"artifact). Embed: the model over the sampled frames, batches of 1,024, {THREADS} threads. Promote: "
              f"choosing the funnel, inserting segments and frames into Milvus Lite, verifying.", "",
              "| step | sampled frames/s | hours of video per hour of wall time | seconds | measured |",
              "|---|---:|---:|---:|---|"]
    steps = [(f"generate the corpus (synth, {THREADS} workers)", gen["seconds"], note(gen)),
             ("decode (`ingest_videos`)", ingest["seconds"], note(ingest)),
             ("embed frames", embed_run["seconds"], note(embed_run)),
             ("build segments (and write the artifact)", phases["build segments"], "this run"),
             ("promote into Milvus Lite", phases["promote (Milvus Lite)"], "this run"),
             ("open the index (`open_video_index`: read both collections)", phases["open_video_index"], "this run")]
    for name, seconds, when in steps:
        lines.append(f"| {name} | {len(frames) / seconds:,.0f} | {hours * 3600 / seconds:,.0f} | {seconds:.0f} | "
                     f"{when} |")
    lines += ["", f"Decode: {decode_fps:,.0f} sampled frames/s; embed: {embed_fps:,.0f} frames/s.", "",
              f"Index size. The memory backend keeps the segments' funnel ({r['funnel_bytes']:,.0f} bytes per "
              f"segment: shortlist index plus the re-rank table in {cfg.retrieval.rerank_dtype}) and every frame's "
              f"time and full embedding (float16) for stage 3. Milvus Lite holds both collections on disk (its data "
              f"directory after promotion, thumbnails included).", "",
              "| per hour of video | segments | frames | memory backend: segments funnel | memory backend: frames "
              "table | memory backend: total | Milvus Lite data |", "|---|---:|---:|---:|---:|---:|---:|",
              f"| per hour | {n_segments / hours:,.0f} | {r['frames_rows'] / hours:,.0f} | "
              f"{r['segment_bytes'] / hours / 1e6:.2f} MB | {r['frames_table'] / hours / 1e6:.2f} MB | "
              f"{memory / hours / 1e6:.2f} MB | {r['milvus_bytes'] / hours / 1e6:.2f} MB |",
              f"| whole corpus ({hours:.2f} h) | {n_segments:,} | {r['frames_rows']:,} | "
              f"{r['segment_bytes'] / 1e6:.1f} MB | {r['frames_table'] / 1e6:.1f} MB | {memory / 1e6:.1f} MB | "
              f"{r['milvus_bytes'] / 1e6:.1f} MB |", "",
              "## Wall time per phase", "", "| phase | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in phases.items()]
    lines += [f"| total | {r['total_s']:.1f} |"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Retrieval benchmark at 1M real embeddings: exact full-dim search, the MRL funnel (float32, int8 and binary
shortlists) and the peers a user would pick instead, side by side in one run.

Catalogue: N (default 1,000,000) augmented Fashion-MNIST *train* images (random shift, flip, rotation,
brightness; item i is an augmentation of train image i mod 60,000), embedded by the trained model; cached under
artifacts/bench/. Queries: *test* images, not in the catalogue: one set chooses each method's setting (the
smallest k0 or efSearch that reaches recall@10 >= 0.99 against exact search), another, disjoint, is timed.

Methods, all in process, one query per call on one thread (a service answers one query per core):
- exact full-dim scan (FAISS IndexFlatIP, 512 dims): the baseline of every speed-up;
- HNSW over the full vectors (what a vector database does by default) at the smallest efSearch reaching the target;
- PCA to d0 dims, HNSW shortlist, full-dim re-rank (dimension reduction without MRL);
- the MRL funnel with an HNSW shortlist on the d0 prefix: float32, int8 and sign-bit codes, full-dim re-rank.
A second table compares shortlist codes by an exact scan (no graph): d0 x {float32, int8, binary} at one k0.

    python bench/retrieval.py --model artifacts/kfp/<run>/train-op/model --out bench/results/retrieval.md
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from mrl.checkpoint import load_model
from mrl.config import RetrievalConfig
from mrl.data.readers import read_fashion_mnist
from mrl.evaluate import embed_items
from mrl.metrics import average_precision_at_k
from mrl.retrieval.choose import single_query_ms
from mrl.retrieval.funnel import Funnel, exact_search, recall_at_k
from mrl.retrieval.memory_index import funnel_search_rows
from mrl.retrieval.shortlist import ShortlistIndex

THREADS = 2  # the machine's cores: embedding, index builds and batched recall searches
TARGET_RECALL = 0.99
TARGET_SPEEDUP = 200.0  # x faster than the exact full-dim scan at TARGET_RECALL
TARGET_MEMORY_RATIO = 0.25  # funnel shortlist index memory / HNSW-on-full-vectors index memory
TARGET_BYTES_RATIO = 32.0  # x fewer shortlist bytes per item than float32 full-dim, for int8 / binary
K = 10


def augment(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Random shift (+-3 px), horizontal flip, rotation (+-15 degrees) and brightness (x 0.7..1.3) of uint8
    (B, 1, 28, 28) images: the kind of variation a real catalogue's near-duplicates have."""
    g = torch.Generator().manual_seed(seed)
    b = len(x)
    img = x.float() / 255.0
    flip = torch.rand(b, generator=g) < 0.5
    img[flip] = img[flip].flip(-1)
    angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(15)
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (3 / 14)  # grid units: 1 = half the image
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    img = F.grid_sample(img, grid, align_corners=False, padding_mode="zeros")
    img = img * (0.7 + 0.6 * torch.rand(b, 1, 1, 1, generator=g))
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def embed_catalogue(model, train_x: np.ndarray, n: int, cache: Path, log) -> tuple[np.ndarray, float]:
    """N augmented train images, embedded; cached (float32 .npy) so a re-run skips the minutes of embedding."""
    if cache.exists():
        log(f"catalogue embeddings from the cache {cache}")
        return np.load(cache, mmap_mode="r"), float("nan")
    model.encoder.eval()
    out = np.lib.format.open_memmap(cache.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32,
                                    shape=(n, model.nesting_dims[-1]))
    started, batch = time.perf_counter(), 4096
    with torch.no_grad():
        for start in range(0, n, batch):
            rows = np.arange(start, min(n, start + batch)) % len(train_x)
            out[start:start + len(rows)] = model.encoder(augment(torch.from_numpy(train_x[rows]), seed=start)).numpy()
            if (start // batch) % 25 == 0:
                rate = (start + len(rows)) / (time.perf_counter() - started)
                log(f"  embedded {start + len(rows):,} / {n:,} augmented images ({rate:,.0f} images/s)")
    rate = n / (time.perf_counter() - started)
    out.flush()
    del out
    cache.with_suffix(".tmp.npy").rename(cache)
    return np.load(cache, mmap_mode="r"), rate


class PcaShortlist:
    """The peer without MRL: PCA (fitted on catalogue rows) to d0 dims, HNSW over the normalized projection."""

    def __init__(self, items: np.ndarray, d0: int, cfg: RetrievalConfig, fit_rows: int = 100_000):
        started = time.perf_counter()
        sample = np.asarray(items[:: max(1, len(items) // fit_rows)], dtype=np.float32)
        self.mean = sample.mean(0)
        self.basis = np.linalg.svd(sample - self.mean, full_matrices=False)[2][:d0].T.astype(np.float32)  # (D, d0)
        projected = np.concatenate([self.project(items[s:s + 100_000]) for s in range(0, len(items), 100_000)])
        self.index = ShortlistIndex(projected, d0, "float32", "HNSW", cfg.hnsw_m, cfg.hnsw_ef_construction)
        self.build_s = time.perf_counter() - started

    @property
    def ef_search(self) -> int:
        return self.index.ef_search

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        self.index.ef_search = ef

    def project(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.basis

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(self.project(queries), k)

    def bytes_per_item(self) -> float:
        return self.index.bytes_per_item()


def time_single(search, queries: np.ndarray) -> np.ndarray:
    """Milliseconds per query, one query per call on one thread, as the funnel choice times them."""
    return np.array(single_query_ms(search, queries))


def map_vs_labels(found: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray) -> float:
    """mAP@10, relevant = same class as the query (as in bench/quality.py)."""
    counts = np.bincount(db_labels, minlength=int(query_labels.max()) + 1)
    relevant = db_labels[np.maximum(found, 0)] == query_labels[:, None]
    return float(average_precision_at_k(relevant, counts[query_labels], found.shape[1]).mean())


def smallest_passing(settings: list, recall_of) -> tuple:
    """The first setting (cheapest first) whose recall on the choice queries reaches the target, else the last."""
    for setting in settings:
        recall = recall_of(setting)
        if recall >= TARGET_RECALL:
            return setting, recall
    return settings[-1], recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained checkpoint (mrl train output)")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue size N (augmented train images)")
    parser.add_argument("--queries", type=int, default=500, help="timed test-image queries per method")
    parser.add_argument("--exact-queries", type=int, default=50, help="of those, timed with the slow exact scan")
    parser.add_argument("--d0", type=int, default=64, help="shortlist prefix (and PCA) dims for the HNSW rows")
    parser.add_argument("--ef-construction", type=int, default=RetrievalConfig().hnsw_ef_construction,
                        help="HNSW efConstruction of every graph (default: retrieval.hnsw_ef_construction's default)")
    parser.add_argument("--cache-dir", default="artifacts/bench")
    parser.add_argument("--out", default="bench/results/retrieval.md")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {line}", flush=True)

    model = load_model(args.model)
    cfg = model.config.retrieval.model_copy(update={"hnsw_ef_construction": args.ef_construction})
    dims = model.nesting_dims
    full_dim = dims[-1]
    if args.d0 not in dims:
        parser.error(f"--d0 {args.d0} is not a nesting dim of the model ({dims})")
    ds = read_fashion_mnist(args.data_dir)
    train, test = ds.split == "train", ds.split == "test"
    digest = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()[:12]
    cache = Path(args.cache_dir) / f"fmnist-augmented-{args.items}-{digest}.npy"
    cache.parent.mkdir(parents=True, exist_ok=True)
    log(f"catalogue: {args.items:,} augmented train images embedded by {args.model}")
    items, embed_rate = embed_catalogue(model, ds.x[train], args.items, cache, log)
    items = np.ascontiguousarray(items)  # into memory: every method below scans or indexes it
    item_labels = ds.labels[train][np.arange(args.items) % int(train.sum())]
    test_emb = embed_items(model.encoder, ds.x[test], 1024)
    test_labels = ds.labels[test]
    timed_q, timed_labels = test_emb[:args.queries], test_labels[:args.queries]
    choice_q = test_emb[args.queries:2 * args.queries]
    log(f"exact top-{K} of {2 * args.queries} test queries over {args.items:,} items (batched)")
    truth = exact_search(items, timed_q, K).indices
    choice_truth = exact_search(items, choice_q, K).indices
    rows: list[dict] = []

    def add(method: str, setting: str, found: np.ndarray, latency: np.ndarray, index_bytes: float, total_bytes: float,
            build_s: float) -> None:
        rows.append({"method": method, "setting": setting, "recall": recall_at_k(found, truth),
                     "map": map_vs_labels(found, timed_labels, item_labels), "p50": float(np.median(latency)),
                     "p99": float(np.percentile(latency, 99)), "index_bytes": index_bytes, "total_bytes": total_bytes,
                     "build_s": build_s})
        r = rows[-1]
        log(f"  {method} [{setting}]: recall@{K} {r['recall']:.4f}, p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms")

    # Exact full-dim scan: the baseline (FAISS's BLAS-backed flat inner product over normalized vectors).
    log("exact full-dim scan")
    flat = ShortlistIndex(items, full_dim, "float32", "FLAT")
    latency = time_single(lambda q: flat.search(q, K), timed_q[:args.exact_queries])
    add("exact full-dim scan", f"{full_dim} dims, FLAT", truth, latency, 4 * full_dim, 4 * full_dim, flat.build_s)
    flat = None  # frees its memory before the next index

    # HNSW over the full vectors: the default vector-database setup.
    log(f"HNSW over the full {full_dim}-dim vectors (M={cfg.hnsw_m}, efConstruction={cfg.hnsw_ef_construction})")
    hnsw_full = ShortlistIndex(items, full_dim, "float32", "HNSW", cfg.hnsw_m, cfg.hnsw_ef_construction)
    log(f"  built in {hnsw_full.build_s:.0f}s")

    def full_recall(ef: int) -> float:
        hnsw_full.ef_search = ef
        return recall_at_k(hnsw_full.search(choice_q, K)[0], choice_truth)

    ef, _ = smallest_passing([16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512], full_recall)
    hnsw_full.ef_search = ef
    found = hnsw_full.search(timed_q, K)[0]
    latency = time_single(lambda q: hnsw_full.search(q, K), timed_q)
    hnsw_bytes = hnsw_full.bytes_per_item()
    add(f"HNSW, full {full_dim} dims", f"efSearch {ef}", found, latency, hnsw_bytes, hnsw_bytes, hnsw_full.build_s)
    hnsw_full = None

    k0s = [k0 for k0 in (25, 50, 100, 200, 400, 800, 1600) if k0 > K]
    rerank = (full_dim,)

    # Shortlist settings, cheapest HNSW work first: efSearch k0 or 2 x k0 (the service's default), as HNSW-full
    # gets its efSearch swept.
    settings = sorted({(k0, ef) for k0 in k0s for ef in (k0, 2 * k0)}, key=lambda s: (s[1], s[0]))

    def funnel_rows(method: str, shortlist, funnel_of, build_s: float, index_bytes: float, rerank_bytes: float) -> None:
        def recall(setting: tuple[int, int]) -> float:
            shortlist.ef_search = setting[1]
            return recall_at_k(funnel_search_rows(shortlist, items, choice_q, funnel_of(setting[0]), K).indices,
                               choice_truth)

        (k0, ef), _ = smallest_passing(settings, recall)
        shortlist.ef_search, funnel = ef, funnel_of(k0)
        found = funnel_search_rows(shortlist, items, timed_q, funnel, K).indices
        latency = time_single(lambda q: funnel_search_rows(shortlist, items, q, funnel, K), timed_q)
        add(method, f"{funnel.name()}, efSearch {ef}", found, latency, index_bytes, index_bytes + rerank_bytes,
            build_s)

    # PCA to d0 + HNSW + full re-rank: dimension reduction without MRL.
    log(f"PCA to {args.d0} dims + HNSW shortlist + full re-rank")
    pca = PcaShortlist(items, args.d0, cfg)
    log(f"  built in {pca.build_s:.0f}s")
    funnel_rows(f"PCA-{args.d0} HNSW shortlist + re-rank", pca, lambda k0: Funnel(args.d0, k0, rerank),
                pca.build_s, pca.bytes_per_item(), 4 * full_dim)
    del pca

    # The MRL funnel: HNSW over the d0 prefix, as float32, int8 and sign bits; full-dim re-rank in float32.
    for quant, d0 in (("float32", args.d0), ("int8", args.d0), ("binary", full_dim)):
        log(f"MRL funnel: {quant} HNSW shortlist on the {d0}-dim prefix + re-rank")
        shortlist = ShortlistIndex(items, d0, quant, "HNSW", cfg.hnsw_m, cfg.hnsw_ef_construction)
        log(f"  built in {shortlist.build_s:.0f}s")
        funnel_rows(f"MRL funnel, {quant} HNSW shortlist", shortlist,
                    lambda k0, d0=d0, q=quant: Funnel(d0, k0, rerank, 4, q),
                    shortlist.build_s, shortlist.bytes_per_item(), 4 * full_dim)
        del shortlist

    # Shortlist codes by an exact scan (no graph): what each code keeps, at one k0.
    code_rows = []
    k0_codes, code_queries = 200, min(200, args.queries)  # exact scans of 1M rows: fewer queries suffice
    for d0 in [d for d in dims if d >= 64]:
        for quant in ("float32", "int8", "binary"):
            scan = ShortlistIndex(items, d0, quant, "FLAT")
            funnel = Funnel(d0, k0_codes, rerank, 4, quant)
            found = funnel_search_rows(scan, items, timed_q[:code_queries], funnel, K).indices
            latency = time_single(lambda q, scan=scan, funnel=funnel: funnel_search_rows(scan, items, q, funnel, K),
                                  timed_q[:30])
            code_rows.append({"d0": d0, "quant": quant, "bytes": funnel.bytes_per_item(),
                              "recall": recall_at_k(found, truth[:code_queries]), "p50": float(np.median(latency))})
            log(f"  code scan {funnel.name()}: recall@{K} {code_rows[-1]['recall']:.4f}, p50 {code_rows[-1]['p50']:.2f} ms")
            del scan

    write_report(args, rows, code_rows, embed_rate, k0_codes, full_dim, time.perf_counter() - started)


def write_report(args, rows: list[dict], code_rows: list[dict], embed_rate: float, k0_codes: int, full_dim: int,
                 total_s: float) -> None:
    exact = rows[0]
    hnsw = next(r for r in rows if r["method"].startswith("HNSW"))
    lines = ["# Retrieval at 1M real embeddings: exact, HNSW, PCA and the MRL funnel", "",
             f"Measured by `bench/retrieval.py`: N = {args.items:,} catalogue items, {args.queries} timed queries "
             f"(exact scan: {args.exact_queries}), one query per call on one thread.", "",
             "| method | setting | recall@10 | mAP@10 | p50 ms | p99 ms | speed-up vs exact | index bytes/item "
             "| with re-rank table | build s | targets |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        speedup = exact["p50"] / r["p50"]
        targets = []
        if r["method"].startswith("MRL funnel, float32"):
            targets.append(f">= {TARGET_SPEEDUP:.0f}x at recall >= {TARGET_RECALL}: "
                           f"{'met' if speedup >= TARGET_SPEEDUP and r['recall'] >= TARGET_RECALL else 'NOT met'}")
            targets.append(f"p50 <= HNSW-full's: {'met' if r['p50'] <= hnsw['p50'] else 'NOT met'}")
            ratio = r["index_bytes"] / hnsw["index_bytes"]
            targets.append(f"index memory {ratio:.2f} of HNSW-full's (<= {TARGET_MEMORY_RATIO}): "
                           f"{'met' if ratio <= TARGET_MEMORY_RATIO else 'NOT met'}")
        lines.append(f"| {r['method']} | {r['setting']} | {r['recall']:.4f} | {r['map']:.4f} | {r['p50']:.3f} | "
                     f"{r['p99']:.3f} | {speedup:.0f}x | {r['index_bytes']:.0f} | {r['total_bytes']:.0f} | "
                     f"{r['build_s']:.0f} | {'; '.join(targets)} |")
    best_float = max((c["recall"] for c in code_rows if c["quant"] == "float32"), default=1.0)
    lines += ["", f"## Shortlist codes (exact scan over all {args.items:,} items, k0 = {k0_codes}, re-rank at "
              f"{full_dim} dims in float32; recall on {min(200, args.queries)} queries, p50 of 30)", "",
              "| d0 | storage | shortlist bytes/item | x fewer than float32 full-dim | recall@10 after re-rank | "
              "scan p50 ms | target |", "|---:|---|---:|---:|---:|---:|---|"]
    for c in code_rows:
        fewer = 4 * full_dim / c["bytes"]
        target = ""
        if c["quant"] != "float32":
            ok = fewer >= TARGET_BYTES_RATIO and c["recall"] >= best_float - 0.01
            target = f">= {TARGET_BYTES_RATIO:.0f}x fewer at <= 1 pt recall lost: {'met' if ok else 'not met'}"
        lines.append(f"| {c['d0']} | {c['quant']} | {c['bytes']:g} | {fewer:.0f}x | {c['recall']:.4f} | "
                     f"{c['p50']:.2f} | {target} |")
    rate = "cached" if math.isnan(embed_rate) else f"{embed_rate:,.0f} images/s on {THREADS} cores"
    lines += [
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.",
        f"- Catalogue: {args.items:,} augmented Fashion-MNIST train images (shift +-3 px, flip, rotation +-15 deg, "
        f"brightness x0.7-1.3), embedded by `{args.model}` ({rate}). Queries: test images (never in the catalogue); "
        f"each method's setting (k0, efSearch) is the smallest reaching recall@10 >= {TARGET_RECALL} against exact "
        f"search on {args.queries} other test images, then timed on these. mAP@10: relevant = same class.",
        "- Latency: wall time of the whole search per query (normalize, shortlist, gather, re-rank) on one thread.",
        "- index bytes/item: what the shortlist searches, as FAISS serializes it (codes + HNSW graph); with re-rank "
        "table: plus the full float32 vectors the re-rank reads (the service keeps them as float16: half that).",
        f"- Total bench time {total_s / 60:.1f} min.",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Retrieval benchmark: exact full-dim search vs the chosen funnel, side by side, on two sets.

(a) Fashion-MNIST embedded by the trained model: database = the 60k train split, queries = the test split.
(b) N synthetic items (default 1,000,000) drawn around real embeddings with the model's measured per-dim
    spectrum (see `synthetic_items`); queries are fresh draws from the same generator.

For each set the funnel is chosen with `measure_funnels` / `choose_funnel` (target recall@k vs exact full-dim
search) on held-out queries, then exact search and the funnel are timed one query at a time, with two
shortlist backends: an exact scan of the d0 prefix (InMemoryIndex) and faiss HNSW on the normalized d0
prefix. The funnel that suits HNSW best (`choose_for_hnsw`) is timed too when it differs. Set (a) is also run
through Milvus Lite (FLAT on the full field vs HNSW on d0 + in-process re-rank). Total time at N = 1M on 2
cores: roughly 20-25 min (most of it building HNSW graphs and the exact-scan baseline), peak memory ~10 GB.

    python bench/retrieval.py --model artifacts/models/model.pt --out bench/results/retrieval.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from mrl.checkpoint import load_model
from mrl.config import RetrievalConfig
from mrl.data.readers import read_fashion_mnist
from mrl.evaluate import embed_items
from mrl.metrics import average_precision_at_k
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.choose import FunnelCost, candidate_funnels, choose_funnel, measure_funnels
from mrl.retrieval.funnel import Funnel, InMemoryIndex, funnel_search, normalized_prefix, recall_at_k

THREADS = 2  # the machine's cores: torch (embedding), faiss (HNSW build) and BLAS (choosing the funnel)
QUERY_THREADS = 1  # single queries run on one thread, as a service running one query per core would: on a loaded
# 2-core machine, a 2-thread BLAS matrix-vector product waits ~8 ms for its second thread (measured here)
TARGETS = {"in-process, exact-scan shortlist": 10.0, "in-process, HNSW shortlist": 50.0}  # x faster than exact
TARGET_RECALL = 0.99  # ... at this recall@10, on the N-item set
COLUMNS = ["set", "engine", "search", "recall@10", "mAP@10", "p50 ms", "p99 ms", "bytes/item", "speed-up (p50)",
           "target"]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in place. Cosine is scale-free, so this changes no ranking; it makes inner
    product equal cosine for Milvus's FLAT index on the full field."""
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def synthetic_items(base: np.ndarray, n: int, noise: float, seed: int, chunk: int = 65_536) -> np.ndarray:
    """n unit rows: a random real embedding as the centre plus Gaussian noise of `noise` x the per-dim std,
    rescaled about the mean by 1/sqrt(1 + noise^2) so each dim's variance equals the model's measured
    variance (var(centres) + noise^2 var = (1 + noise^2) var). Centres keep the real, class-like cluster
    structure, so nearest neighbours mean something. Generated chunk by chunk into one preallocated array."""
    rng = np.random.default_rng(seed)
    mean, std = base.mean(0), base.std(0)
    scale = np.float32(1 / np.sqrt(1 + noise**2))
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        centres = base[rng.integers(0, len(base), m)]
        block = (centres - mean + noise * std * rng.standard_normal((m, base.shape[1]), dtype=np.float32)) * scale
        out[start:start + m] = unit_rows(block + mean)
    return out


class HnswShortlist:
    """faiss HNSW over the normalized d0 prefix (inner product = cosine) as the funnel's shortlist; the re-rank
    tables come from the in-memory index, so `funnel_search` runs unchanged on it."""

    def __init__(self, index: InMemoryIndex, d0: int, m: int, ef_construction: int, ef_search: int):
        self.index, self.d0, self.ef_search = index, d0, ef_search
        self.hnsw = faiss.IndexHNSWFlat(d0, m, faiss.METRIC_INNER_PRODUCT)
        self.hnsw.hnsw.efConstruction = ef_construction
        self.hnsw.add(index.prefix(d0))

    def shortlist(self, queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if dim != self.d0:
            raise ValueError(f"this HNSW index holds the {self.d0}-dim prefix, not {dim}")
        self.hnsw.hnsw.efSearch = max(self.ef_search, k)  # HNSW returns at most ef results
        scores, indices = self.hnsw.search(normalized_prefix(queries, dim), k)
        return indices, scores

    def prefix(self, dim: int) -> np.ndarray:
        return self.index.prefix(dim)

    def bytes_per_item(self) -> float:
        """Vectors plus graph links, as faiss stores them."""
        return len(faiss.serialize_index(self.hnsw)) / self.hnsw.ntotal


def time_single(search_one: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
                threads: int | None = QUERY_THREADS) -> tuple[np.ndarray, np.ndarray]:
    """Top-k row indices and per-query latency (ms), one query per call: the latency a service sees.
    `threads` caps BLAS and OpenMP (numpy, faiss) while timing; None leaves them at the machine's default."""
    search_one(queries[:1])  # warm-up: lazily built prefix tables, allocator, caches
    found, latency = [], []
    with threadpool_limits(threads):
        for q in queries:
            start = time.perf_counter()
            found.append(search_one(q[None, :])[0])
            latency.append(1000 * (time.perf_counter() - start))
    return np.stack(found), np.array(latency)


def noise_from_data(emb: np.ndarray, database: np.ndarray, queries: np.ndarray) -> float:
    """Median distance from a real query to its nearest real database item, in units of the embedding's spread
    (sqrt of the total variance). As the synthetic noise, it puts each generated item about as far from its
    centre as a real nearest neighbour is: like an augmented copy of the centre's image."""
    db = torch.from_numpy(database)
    nearest = torch.cat([torch.cdist(torch.from_numpy(q), db).min(dim=1).values for q in np.array_split(queries, 8)])
    return float(nearest.median()) / float(np.sqrt(emb.var(0).sum()))


def map_vs_labels(found: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray) -> float:
    """mAP@k with relevant = same class as the query (as in bench/quality.py)."""
    counts = np.bincount(db_labels, minlength=int(query_labels.max()) + 1)
    relevant = db_labels[found] == query_labels[:, None]
    return float(average_precision_at_k(relevant, counts[query_labels], found.shape[1]).mean())


def map_vs_truth(found: np.ndarray, truth: np.ndarray) -> float:
    """mAP@k with relevant = in the exact full-dim top-k (no labels): recall that also rewards rank order."""
    relevant = (found[:, :, None] == truth[:, None, :]).any(axis=2)
    return float(average_precision_at_k(relevant, np.full(len(found), truth.shape[1]), truth.shape[1]).mean())


def result_row(set_name: str, engine: str, search: str, found: np.ndarray, latency: np.ndarray, truth: np.ndarray,
               map10: float | None, bytes_per_item: float) -> dict:
    return {"set": set_name, "engine": engine, "search": search, "recall": recall_at_k(found, truth), "map": map10,
            "p50": float(np.percentile(latency, 50)), "p99": float(np.percentile(latency, 99)),
            "bytes": bytes_per_item}


def choose(items: np.ndarray, queries: np.ndarray, cfg: RetrievalConfig,
           nesting_dims: list[int]) -> tuple[FunnelCost, FunnelCost]:
    """The funnel for an exact-scan shortlist (`choose_funnel`: fewest multiply-adds at the target recall on these
    held-out queries) and the one for an HNSW shortlist. Measured over all the items: a shortlist's recall at a
    given k0 falls as the database grows, so the choice is made at full size."""
    costs = measure_funnels(items, queries, candidate_funnels(cfg, nesting_dims), cfg.k, timed_queries=20)
    return choose_funnel(costs, cfg.target_recall), choose_for_hnsw(costs, cfg)


def choose_for_hnsw(costs: list[FunnelCost], cfg: RetrievalConfig) -> FunnelCost:
    """An HNSW search costs about ef x 2M distance computations of d0 dims (ef = 2 x k0) whatever N is, whereas
    `choose_funnel` counts an N x d0 scan, which favours a small d0 with a large k0. Pick the passing funnel with
    the fewest HNSW-estimated multiply-adds plus re-rank multiply-adds."""
    def hnsw_cost(c: FunnelCost) -> int:
        ef = cfg.hnsw_ef or 2 * c.funnel.k0
        return ef * 2 * cfg.hnsw_m * c.funnel.d0 + c.funnel.flops_per_query(0, cfg.k)

    passing = [c for c in costs if c.recall >= cfg.target_recall and c.funnel.rerank_dims]
    return min(passing, key=hnsw_cost) if passing else choose_funnel(costs, cfg.target_recall)


def describe(cost: FunnelCost, k: int) -> str:
    return (f"**{cost.funnel.name()}** (recall@{k} {cost.recall:.4f} on the choice queries, "
            f"{cost.speedup_flops:.1f}x fewer multiply-adds than exact)")


def bench_in_process(set_name: str, items: np.ndarray, queries: np.ndarray, funnel: Funnel, hnsw_funnel: Funnel,
                     cfg: RetrievalConfig, mean_ap: Callable[[np.ndarray, np.ndarray], float],
                     log) -> tuple[list[dict], np.ndarray]:
    """Exact full-dim scan; the chosen funnel with an exact-scan shortlist and with an HNSW shortlist; and the
    funnel chosen for HNSW, if it differs. Returns the rows and the exact top-k (the truth for recall)."""
    k, full_dim = cfg.k, items.shape[1]
    index = InMemoryIndex(items)
    exact = Funnel(full_dim, k)  # a one-stage "funnel" at full dim is the exact scan, on the cached table
    log(f"{set_name}: exact full-dim search, {len(queries)} single queries over {len(items):,} items")
    truth, latency = time_single(lambda q: funnel_search(index, q, exact, k).indices, queries)
    rows = [result_row(set_name, "in-process", f"exact full-dim scan ({QUERY_THREADS} thread)", truth, latency, truth,
                       mean_ap(truth, truth), 4 * full_dim)]
    # The exact scan is memory-bound and may gain from a second thread: time that too, and take the faster baseline.
    found, latency = time_single(lambda q: funnel_search(index, q, exact, k).indices, queries, threads=None)
    rows.append(result_row(set_name, "in-process", f"exact full-dim scan ({THREADS} threads)", found, latency, truth,
                           mean_ap(found, truth), 4 * full_dim))
    log(f"{set_name}: funnel {funnel.name()}, exact-scan shortlist")
    found, latency = time_single(lambda q: funnel_search(index, q, funnel, k).indices, queries)
    rows.append(result_row(set_name, "in-process", f"funnel {funnel.name()}, exact-scan shortlist", found, latency,
                           truth, mean_ap(found, truth), funnel.bytes_per_item()))
    graphs: dict[int, HnswShortlist] = {}  # one HNSW index per d0
    for f in dict.fromkeys([funnel, hnsw_funnel]):
        ef = max(cfg.hnsw_ef or 2 * f.k0, f.k0)  # as MilvusFunnelIndex; HNSW returns at most ef results
        if f.d0 not in graphs:
            start = time.perf_counter()
            graphs[f.d0] = HnswShortlist(index, f.d0, cfg.hnsw_m, cfg.hnsw_ef_construction, ef)
            log(f"{set_name}: HNSW (M={cfg.hnsw_m}, efConstruction={cfg.hnsw_ef_construction}) on the {f.d0}-dim "
                f"prefix built in {time.perf_counter() - start:.1f}s")
        hnsw = graphs[f.d0]
        hnsw.ef_search = ef
        log(f"{set_name}: funnel {f.name()}, HNSW shortlist (efSearch {ef})")
        found, latency = time_single(lambda q, f=f, hnsw=hnsw: funnel_search(hnsw, q, f, k).indices, queries)
        label = f"funnel {f.name()}, HNSW shortlist (ef {ef})" + ("" if f == funnel else ", chosen for HNSW")
        rows.append(result_row(set_name, "in-process", label, found, latency, truth, mean_ap(found, truth),
                               hnsw.bytes_per_item()))
    return rows, truth


def build_collection(client, name: str, items: np.ndarray, labels: list[str], funnel: Funnel, nesting_dims: list[int],
                     cfg: RetrievalConfig) -> dict:
    """A collection as `mrl promote` builds it (index on the d0 field, FLAT on the full field), filled and loaded.
    Returns insert and flush timings, the row count and the index types Milvus reports."""
    info = mi.CollectionInfo(name, "bench", "0", funnel, nesting_dims, cfg.k, None)
    mi.create_collection(client, info, items.shape[1], cfg.index_type, cfg.hnsw_m, cfg.hnsw_ef_construction)
    start = time.perf_counter()
    mi.insert_rows(client, name, np.arange(len(items)), labels, items, funnel.d0, cfg.insert_batch)
    stats = {"funnel": funnel.name(), "insert_s": time.perf_counter() - start}
    start = time.perf_counter()
    client.flush(name)  # seal the segments so searches hit built indexes, not a growing-segment scan
    client.load_collection(name)
    stats["flush_s"] = time.perf_counter() - start
    stats["rows"] = mi.row_count(client, name)
    stats["index"] = {f: client.describe_index(name, f)["index_type"] for f in ("short", "full")}
    if stats["rows"] != len(items):
        raise RuntimeError(f"Milvus collection {name} holds {stats['rows']} rows, inserted {len(items)}")
    return stats


def bench_milvus(set_name: str, items: np.ndarray, labels: list[str], queries: np.ndarray, truth: np.ndarray,
                 funnels: list[Funnel], nesting_dims: list[int], cfg: RetrievalConfig,
                 mean_ap: Callable[[np.ndarray, np.ndarray], float], log) -> tuple[list[dict], list[dict]]:
    """Milvus Lite in a temp dir, one collection per funnel: FLAT on the full field is the exact baseline (timed
    once), the index on the d0 field + in-process re-rank (MilvusFunnelIndex) is the funnel."""
    k = cfg.k
    rows, stats = [], []
    id_to_row = {str(i): i for i in range(len(items))}
    with tempfile.TemporaryDirectory() as tmp:
        client = mi.connect(str(Path(tmp) / "bench.db"))
        for n, funnel in enumerate(dict.fromkeys(funnels)):
            name = f"bench_{n}"
            log(f"{set_name}: Milvus Lite collection for {funnel.name()}: inserting {len(items):,} rows")
            stat = build_collection(client, name, items, labels, funnel, nesting_dims, cfg)
            if n == 0:
                log(f"{set_name}: Milvus exact search (FLAT on the full field), {len(queries)} single queries")

                def exact_one(q: np.ndarray, name: str = name) -> np.ndarray:
                    hits = client.search(name, data=list(q), anns_field="full", limit=k, output_fields=["label"],
                                         search_params={"metric_type": "IP"})
                    return np.array([[int(h["id"]) for h in row] for row in hits])

                found, latency = time_single(exact_one, queries)
                rows.append(result_row(set_name, "Milvus Lite", f"exact full-dim ({stat['index']['full']})", found,
                                       latency, truth, mean_ap(found, truth), 4 * items.shape[1]))
            log(f"{set_name}: Milvus funnel {funnel.name()}, {len(queries)} single queries")
            index = mi.MilvusFunnelIndex(client, name, cfg.hnsw_ef)
            stage_ms: dict[str, float] = {}

            def funnel_one(q: np.ndarray, index: mi.MilvusFunnelIndex = index, stage_ms: dict = stage_ms) -> np.ndarray:
                result = index.search_result(q, id_to_row, k)
                for stage, ms in result.timings_ms.items():
                    stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
                return result.indices

            found, latency = time_single(funnel_one, queries)
            label = f"funnel {funnel.name()}, {stat['index']['short']} shortlist" + (", chosen for HNSW" if n else "")
            rows.append(result_row(set_name, "Milvus Lite", label, found, latency, truth, mean_ap(found, truth),
                                   funnel.bytes_per_item()))
            stat["stage_ms"] = {s: ms / (len(queries) + 1) for s, ms in stage_ms.items()}  # + the warm-up query
            stats.append(stat)
        client.close()
    return rows, stats


def add_speedups(rows: list[dict], target_set: str) -> None:
    """Speed-up = the same engine's fastest exact p50 / this p50; targets apply to in-process search on the N-item
    set."""
    for r in rows:
        base = min(x["p50"] for x in rows
                   if x["set"] == r["set"] and x["engine"] == r["engine"] and x["search"].startswith("exact full-dim"))
        r["speedup"] = base / r["p50"]
        backend = "HNSW" if "HNSW shortlist" in r["search"] else "exact-scan" if "exact-scan" in r["search"] else ""
        target = TARGETS.get(f"{r['engine']}, {backend} shortlist") if r["set"] == target_set else None
        r["target"] = "" if target is None else (
            f">= {target:.0f}x at recall >= {TARGET_RECALL}: "
            f"{'met' if r['speedup'] >= target and r['recall'] >= TARGET_RECALL else 'NOT met'}")


def table(rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---|" + "---:|" * 6 + "---|"]
    for r in rows:
        map10 = "n/a" if r["map"] is None else f"{r['map']:.4f}"
        lines.append(f"| {r['set']} | {r['engine']} | {r['search']} | {r['recall']:.4f} | {map10} | {r['p50']:.2f} "
                     f"| {r['p99']:.2f} | {r['bytes']:.0f} | {r['speedup']:.1f}x | {r['target']} |")
    return lines


def machine() -> str:
    pools = ", ".join(sorted({f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()}))
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, load average "
            f"{os.getloadavg()[0]:.1f} at the end; threads: torch {THREADS}, faiss {faiss.omp_get_max_threads()}, "
            f"BLAS/OpenMP pools ({pools}); timed single queries capped at {QUERY_THREADS} thread unless a row says "
            "otherwise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained checkpoint (mrl train output)")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic set size N")
    parser.add_argument("--queries", type=int, default=500, help="timed single queries per configuration")
    parser.add_argument("--noise", type=float, default=None,
                        help="synthetic noise in units of the per-dim std (default: measured, see noise_from_data)")
    parser.add_argument("--out", default="bench/results/retrieval.md")
    parser.add_argument("--skip-milvus", action="store_true")
    args = parser.parse_args()
    if args.queries < 1 or args.items < 1:
        parser.error("--queries and --items must be positive")
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {line}", flush=True)

    model = load_model(args.model)
    cfg, nesting_dims = model.config.retrieval, model.nesting_dims
    ds = read_fashion_mnist(args.data_dir)
    log(f"embedding {len(ds):,} Fashion-MNIST images with {args.model}")
    start = time.perf_counter()
    emb = embed_items(model.encoder, ds.x, 1024)
    embed_rate = len(ds) / (time.perf_counter() - start)
    variance = emb.var(0)
    share = {d: float(variance[:d].sum() / variance.sum()) for d in nesting_dims}
    train, test = ds.split == "train", ds.split == "test"
    if args.queries >= test.sum():
        parser.error(f"--queries must be below the {int(test.sum())} test items (the rest choose the funnel)")
    n_choice = min(cfg.max_queries, int(test.sum()) - args.queries)  # held-out queries for choosing, not timed
    rows: list[dict] = []
    notes: list[str] = []

    # (a) Fashion-MNIST: train split as the database, test split as queries (timed ones and choice ones apart).
    set_a = "(a) Fashion-MNIST"
    items_a, labels_a = unit_rows(emb[train]), ds.labels[train]  # boolean indexing copies
    test_emb, test_labels = unit_rows(emb[test]), ds.labels[test]
    queries_a, query_labels_a = test_emb[:args.queries], test_labels[:args.queries]
    log(f"{set_a}: choosing the funnel on {n_choice} held-out queries over {len(items_a):,} items")
    chosen_a, hnsw_a = choose(items_a, test_emb[args.queries:args.queries + n_choice], cfg, nesting_dims)
    log(f"{set_a}: chosen {describe(chosen_a, cfg.k)}; for HNSW {describe(hnsw_a, cfg.k)}")

    def map_a(found: np.ndarray, truth: np.ndarray) -> float:
        return map_vs_labels(found, query_labels_a, labels_a)

    rows_a, truth_a = bench_in_process(set_a, items_a, queries_a, chosen_a.funnel, hnsw_a.funnel, cfg, map_a, log)
    rows += rows_a
    milvus = None
    if not args.skip_milvus:
        rows_m, milvus = bench_milvus(set_a, items_a, [str(ds.classes[i]) for i in labels_a], queries_a, truth_a,
                                      [chosen_a.funnel, hnsw_a.funnel], nesting_dims, cfg, map_a, log)
        rows += rows_m
    del items_a

    # (b) Synthetic: items, timed queries and choice queries come from one generator; slices are views.
    set_b = f"(b) synthetic {args.items:,}"
    noise = args.noise if args.noise is not None else noise_from_data(emb, emb[train], emb[test][:1000])
    noise_why = "set by --noise" if args.noise is not None else (
        "the median real test-to-train 1-NN distance over the embedding's spread, so a generated item sits about as "
        "far from its centre as a real nearest neighbour, like an augmented copy of the centre's image")
    log(f"{set_b}: generating {args.items + args.queries + n_choice:,} rows (noise {noise:.3f})")
    rows_b_all = synthetic_items(emb, args.items + args.queries + n_choice, noise, seed=0)
    items_b = rows_b_all[:args.items]
    queries_b = rows_b_all[args.items:args.items + args.queries]
    log(f"{set_b}: choosing the funnel on {n_choice} held-out queries over {args.items:,} items")
    chosen_b, hnsw_b = choose(items_b, rows_b_all[args.items + args.queries:], cfg, nesting_dims)
    log(f"{set_b}: chosen {describe(chosen_b, cfg.k)}; for HNSW {describe(hnsw_b, cfg.k)}")
    rows_b, _ = bench_in_process(set_b, items_b, queries_b, chosen_b.funnel, hnsw_b.funnel, cfg, map_vs_truth, log)
    rows += rows_b
    add_speedups(rows, set_b)

    total = time.perf_counter() - started
    notes += [
        f"- Machine: {machine()}.",
        f"- Model: `{args.model}`, nesting dims {nesting_dims}; share of embedding variance in the first d dims: "
        + ", ".join(f"{d}: {s:.2f}" for d, s in share.items()) + ".",
        f"- (a) Fashion-MNIST: database = {int(train.sum()):,} train embeddings, queries = the first {args.queries} "
        f"test embeddings; mAP@{cfg.k}: relevant = same class. Funnel chosen on the next {n_choice} test embeddings: "
        f"{describe(chosen_a, cfg.k)}; for HNSW {describe(hnsw_a, cfg.k)}.",
        f"- (b) **synthetic**, N = {args.items:,}: each row is a random real embedding (all {len(emb):,}) plus "
        f"Gaussian noise of {noise:.3f} x the per-dim std ({noise_why}), rescaled so every dim's variance equals the "
        f"model's measured per-dim variance; queries are {args.queries} fresh draws. Synthetic because embedding "
        f"{args.items:,} augmented images on {THREADS} CPU cores is too slow for a benchmark run: this run embedded "
        f"{embed_rate:.0f} images/s, so ~{args.items / embed_rate / 60:.1f} min for N, before augmenting them. "
        f"mAP@{cfg.k}: relevant = in the exact full-dim top-{cfg.k} (no labels). Funnel chosen on {n_choice} more draws: "
        f"{describe(chosen_b, cfg.k)}; for HNSW {describe(hnsw_b, cfg.k)}.",
        f"- Funnel candidates and target from the model's retrieval config: d0 {cfg.candidate_d0}, k0 "
        f"{cfg.candidate_k0}, cascades {cfg.cascades}, target recall@{cfg.k} >= {cfg.target_recall}.",
        "- Latency: one query per call, wall time of the whole search (normalize, shortlist, re-rank), "
        f"{args.queries} queries after one warm-up. Speed-up: the same engine's exact p50 / this p50.",
        "- bytes/item: the index the shortlist searches (4 x d0 for the prefix table; HNSW adds its graph, size "
        "from faiss serialization; Milvus rows count vectors only; 4 x full dim for exact). The funnel also keeps "
        "the full vectors for re-ranking.",
    ]
    if milvus:
        notes.append("- Milvus Lite (temp file; one collection per funnel, each holding the d0 field and the full field "
                     "as `mrl promote` builds it; set (a) only). Latencies include Milvus Lite's gRPC round trips; "
                     "the funnel's include fetching the k0 candidates' full vectors for the re-rank:")
        for m in milvus:
            stages = ", ".join(f"{s} {ms:.1f}" for s, ms in m["stage_ms"].items())
            notes.append(f"  - {m['funnel']} (indexes {m['index']}): inserted {m['rows']:,} rows in {m['insert_s']:.1f}s "
                         f"= **{m['rows'] / m['insert_s']:,.0f} rows/s** (batches of {cfg.insert_batch}); flush + "
                         f"index build + load {m['flush_s']:.1f}s; funnel mean ms per query by stage: {stages}.")
    notes.append(f"- Targets (in-process, set (b), recall@{cfg.k} >= {TARGET_RECALL}): >= 10x faster than exact with the "
                 "exact-scan shortlist, >= 50x with the HNSW shortlist. Reported as measured.")
    notes.append(f"- Total bench time {total / 60:.1f} min.")
    lines = ["# Retrieval: exact full-dim search vs the MRL funnel", "",
             f"Measured by `bench/retrieval.py` (N = {args.items:,}, {args.queries} queries per configuration).", "",
             *table(rows), "", *notes, ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

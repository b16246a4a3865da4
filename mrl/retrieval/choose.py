"""Choose the funnel by the cost model of the index actually served: every candidate (d0, k0, cascade, shortlist
storage) runs on the in-process FAISS shortlist that the memory backend serves (HNSW or FLAT, as
retrieval.index_type says; for the milvus backend, FAISS HNSW with the same parameters stands in for Milvus's),
on held-out queries that are not in the searched catalogue. Recall@k is measured against exact full-dim search,
latency as the median of single queries on one thread; the fastest funnel that reaches the target recall wins."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from mrl.config import RetrievalConfig
from mrl.data.artifact import atomic_write
from mrl.retrieval.funnel import Funnel, exact_search, recall_at_k
from mrl.retrieval.memory_index import funnel_search_rows
from mrl.retrieval.shortlist import ShortlistIndex


@dataclass
class FunnelCost:
    funnel: Funnel
    recall: float  # recall@k against exact full-dim search
    flops_per_query: int  # multiply-adds of an exact-scan shortlist plus the re-rank (a machine-free cost)
    bytes_scanned_per_query: int  # 4 x those multiply-adds
    latency_ms: float | None  # measured p50 of single queries on one thread on the index served (None: not timed)
    speedup_flops: float  # exact full-dim flops / these flops
    p99_ms: float | None = None  # measured p99, as latency_ms
    bytes_per_item: float = 0.0  # the shortlist index in memory (codes + HNSW graph), per item
    build_s: float = 0.0  # time to build that shortlist index over the measured items

    def row(self) -> dict:
        return asdict(self) | {"funnel": self.funnel.name(), "funnel_spec": self.funnel.to_dict(),
                               "precision": self.funnel.quant}


def candidate_funnels(cfg: RetrievalConfig, nesting_dims: list[int], quantizations: list[str] | None = None
                      ) -> list[Funnel]:
    """Exact full-dim search (always qualifies), then every (shortlist storage, d0, k0, cascade) from `cfg` that
    makes a funnel: float32 and int8 over candidate_d0, binary over candidate_binary_d0."""
    full = nesting_dims[-1]
    out = [Funnel(full, cfg.k)]
    for quant in cfg.quantizations if quantizations is None else quantizations:
        d0s = cfg.candidate_binary_d0 if quant == "binary" else cfg.candidate_d0
        for d0, k0, cascade in itertools.product(d0s, cfg.candidate_k0, cfg.cascades):
            dims = tuple(d for d in cascade if d in nesting_dims and (d > d0 or (d == d0 and quant != "float32")))
            if d0 in nesting_dims and dims and k0 > cfg.k and (d0 < full or quant != "float32"):
                out.append(Funnel(d0, k0, dims, cfg.shrink, quant))
    return list(dict.fromkeys(out))


def measure_funnels(items: np.ndarray, queries: np.ndarray, funnels: list[Funnel], cfg: RetrievalConfig,
                    timed_queries: int | None = None, progress=None) -> list[FunnelCost]:
    """Recall of each funnel on every query (batched searches), latency over single queries (the first
    `timed_queries`, default cfg.timed_queries). `items` must not contain the queries: a query that finds itself
    is a free hit that inflates recall.

    Only what can win is timed: within one (d0, storage, cascade), k0 ascends, and the first k0 that reaches
    cfg.target_recall is the fastest of its group that does, so larger k0 are not measured at all (their rows are
    absent), and smaller ones, which miss the target, get recall only (latency_ms None). The exact baseline is
    always timed."""
    k = cfg.k
    truth = exact_search(items, queries, k).indices
    shortlists: dict[tuple, ShortlistIndex] = {}  # one FAISS index per (d0, storage), built on first use
    exact_flops = len(items) * items.shape[1]
    timed = queries[: timed_queries or cfg.timed_queries]
    reached: set[tuple] = set()  # groups whose target k0 was found
    costs = []
    for funnel in sorted(funnels, key=lambda f: (f.d0 != items.shape[1] or f.quant != "float32", f.k0)):
        group = (funnel.d0, funnel.quant, funnel.rerank_dims)
        if group in reached:
            if progress:
                progress(1)
            continue
        exact = not funnel.rerank_dims  # the baseline: an exact scan of the full vectors
        if (funnel.d0, funnel.quant) not in shortlists:
            shortlists[funnel.d0, funnel.quant] = ShortlistIndex(
                items, funnel.d0, funnel.quant, "FLAT" if exact else cfg.index_type, cfg.hnsw_m,
                cfg.hnsw_ef_construction, cfg.hnsw_ef)
        shortlist = shortlists[funnel.d0, funnel.quant]
        found = funnel_search_rows(shortlist, items, queries, funnel, k).indices
        recall = recall_at_k(found, truth)
        latency = None
        if recall >= cfg.target_recall or exact:
            reached.add(group)
            latency = single_query_ms(
                lambda q, shortlist=shortlist, funnel=funnel: funnel_search_rows(shortlist, items, q, funnel, k), timed)
        flops = funnel.flops_per_query(len(items), k)
        p50, p99 = (None, None) if latency is None else (float(np.median(latency)), float(np.percentile(latency, 99)))
        costs.append(FunnelCost(funnel, recall, flops, 4 * flops, p50, exact_flops / flops, p99,
                                shortlist.bytes_per_item(), shortlist.build_s))
        if progress:
            progress(1)
    return costs


def single_query_ms(search, queries: np.ndarray) -> list[float]:
    """Milliseconds of `search(one_query[None, :])` per query, on one thread (a service answers one query per
    core), after one warm-up call."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        search(queries[:1])
        latency = []
        for q in queries:
            started = time.perf_counter()
            search(q[None, :])
            latency.append(1000 * (time.perf_counter() - started))
    finally:
        faiss.omp_set_num_threads(threads)
    return latency


def choose_funnel(costs: list[FunnelCost], target_recall: float) -> FunnelCost:
    """The fastest measured funnel that reaches the target (exact search always does); ties: the smaller index."""
    passing = [c for c in costs if c.recall >= target_recall and c.latency_ms is not None]
    return min(passing, key=lambda c: (c.latency_ms, c.bytes_per_item))


def plot_cost_recall(costs: list[FunnelCost], chosen: FunnelCost, target: float, path: Path) -> None:
    # matplotlib: ~0.9 s to import; only the plot needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(7, 4.5))
    timed = [c for c in costs if c.latency_ms is not None]  # the fastest funnel of each kind reaching the target
    for d0, quant in sorted({(c.funnel.d0, c.funnel.quant) for c in timed}):
        group = sorted((c for c in timed if (c.funnel.d0, c.funnel.quant) == (d0, quant)), key=lambda c: c.latency_ms)
        marker = {"float32": "o", "int8": "s", "binary": "^"}[quant]  # colours repeat after ten series
        ax.plot([c.latency_ms for c in group], [c.recall for c in group], marker, label=f"d0={d0} {quant}", ms=5)
    ax.plot([chosen.latency_ms], [chosen.recall], "r*", ms=14, label=f"chosen: {chosen.funnel.name()}")
    ax.axhline(target, color="gray", ls="--", lw=1, label=f"target {target}")
    ax.set_xscale("log")
    ax.set_xlabel("p50 ms per query, one thread (log)")
    ax.set_ylabel("recall@k vs exact full-dim")
    ax.set_title("funnels reaching the target: measured latency vs recall")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)

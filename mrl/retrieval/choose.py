"""Choose the funnel: measure candidate (d0, k0, cascade) funnels on held-out queries against exact
full-dim search, and pick the cheapest (fewest multiply-adds per query) that reaches the target recall."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mrl.config import RetrievalConfig
from mrl.retrieval.funnel import Funnel, InMemoryIndex, exact_search, recall_at_k, rerank


@dataclass
class FunnelCost:
    funnel: Funnel
    recall: float  # recall@k against exact full-dim search
    flops_per_query: int  # multiply-adds
    bytes_scanned_per_query: int  # shortlist scan (4 bytes x d0 x N) plus re-ranked prefixes
    latency_ms: float  # measured, per query, in-process
    speedup_flops: float  # exact full-dim flops / these flops

    def row(self) -> dict:
        return asdict(self) | {"funnel": self.funnel.name(), "funnel_spec": self.funnel.to_dict()}


def candidate_funnels(cfg: RetrievalConfig, nesting_dims: list[int]) -> list[Funnel]:
    full = nesting_dims[-1]
    out = [Funnel(full, cfg.k)]  # exact full-dim search always qualifies
    for d0, k0, cascade in itertools.product(cfg.candidate_d0, cfg.candidate_k0, cfg.cascades):
        dims = tuple(d for d in cascade if d in nesting_dims and d > d0)
        if d0 in nesting_dims and d0 < full and dims and k0 > cfg.k:
            out.append(Funnel(d0, k0, dims, cfg.shrink))
    return list(dict.fromkeys(out))


def measure_funnels(items: np.ndarray, queries: np.ndarray, funnels: list[Funnel], k: int,
                    timed_queries: int = 100) -> list[FunnelCost]:
    """Recall on every query; latency by running each funnel end to end on the first `timed_queries`.
    Shortlists are sorted best-first, so one scan per d0 at the largest k0 serves every smaller k0."""
    truth = exact_search(items, queries, k).indices
    index = InMemoryIndex(items)
    exact_flops = len(items) * items.shape[1]
    shortlists = {d0: index.shortlist(queries, d0, max(f.k0 for f in funnels if f.d0 == d0))[0]
                  for d0 in {f.d0 for f in funnels}}
    timed = queries[:timed_queries]
    costs = []
    for funnel in funnels:
        stages = funnel.stages(k)
        found = shortlists[funnel.d0][:, :stages[0][1]]
        for dim, keep in stages[1:]:
            found = rerank(queries, index.prefix(dim), found, keep)[0]
        start = time.perf_counter()
        index.search(timed, funnel, k)
        latency = 1000 * (time.perf_counter() - start) / len(timed)
        flops = funnel.flops_per_query(len(items), k)
        costs.append(FunnelCost(funnel, recall_at_k(found, truth), flops, 4 * flops, latency, exact_flops / flops))
    return costs


def choose_funnel(costs: list[FunnelCost], target_recall: float) -> FunnelCost:
    passing = [c for c in costs if c.recall >= target_recall]
    return min(passing, key=lambda c: (c.flops_per_query, c.latency_ms))


def plot_cost_recall(costs: list[FunnelCost], chosen: FunnelCost, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrl.data.artifact import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d0 in sorted({c.funnel.d0 for c in costs}):
        group = sorted((c for c in costs if c.funnel.d0 == d0), key=lambda c: c.flops_per_query)
        ax.plot([c.flops_per_query for c in group], [c.recall for c in group], "o-", label=f"d0={d0}", ms=4)
    ax.plot([chosen.flops_per_query], [chosen.recall], "r*", ms=14, label=f"chosen: {chosen.funnel.name()}")
    ax.axhline(target, color="gray", ls="--", lw=1, label=f"target {target}")
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds per query (log)")
    ax.set_ylabel("recall@k vs exact full-dim")
    ax.set_title("funnel cost vs recall")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)

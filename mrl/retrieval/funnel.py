"""The funnel: stage 0 scans every item's d0-dim prefix and keeps k0 candidates; each later stage
re-scores the survivors with a longer prefix and keeps fewer (k_i = max(k, k_{i-1} // shrink)); the last
stage keeps k. Every prefix is L2-normalized before scoring, so scores are cosine similarities."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Funnel:
    d0: int  # shortlist prefix size
    k0: int  # shortlist size
    rerank_dims: tuple[int, ...] = ()  # longer prefixes, increasing; the last is usually the full dim
    shrink: int = 4  # each re-rank stage keeps 1/shrink of its input (never fewer than k)

    def stages(self, k: int) -> list[tuple[int, int]]:
        """[(dim, keep), ...] for a final top-k."""
        dims = [d for d in self.rerank_dims if d > self.d0]
        if not dims:  # no re-rank: the shortlist is the answer
            return [(self.d0, k)]
        out, keep = [(self.d0, max(k, self.k0))], max(k, self.k0)
        for i, dim in enumerate(dims):
            keep = k if i == len(dims) - 1 else max(k, keep // self.shrink)
            out.append((dim, keep))
        return out

    def flops_per_query(self, n_items: int, k: int) -> int:
        """Multiply-adds per query: the full shortlist scan plus each re-rank of the survivors."""
        stages = self.stages(k)
        flops, survivors = n_items * stages[0][0], stages[0][1]
        for dim, keep in stages[1:]:
            flops, survivors = flops + survivors * dim, keep
        return flops

    def bytes_per_item(self) -> int:
        """Bytes of the searched (shortlist) index per item: d0 float32s."""
        return 4 * self.d0

    def name(self) -> str:
        return " -> ".join([f"{self.d0}@{self.k0}", *(str(d) for d in self.rerank_dims if d > self.d0)])

    def to_dict(self) -> dict:
        return asdict(self) | {"rerank_dims": list(self.rerank_dims)}

    @classmethod
    def from_dict(cls, d: dict) -> Funnel:
        return cls(int(d["d0"]), int(d["k0"]), tuple(int(x) for x in d.get("rerank_dims", ())), int(d.get("shrink", 4)))


@dataclass
class SearchResult:
    indices: np.ndarray  # (Q, k) row indices into the items, best first
    scores: np.ndarray  # (Q, k) cosine similarity at the last stage's dim
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, summed over queries


def normalized_prefix(x: np.ndarray, dim: int) -> np.ndarray:
    prefix = np.ascontiguousarray(x[..., :dim], dtype=np.float32)
    norm = np.linalg.norm(prefix, axis=-1, keepdims=True)
    return prefix / np.maximum(norm, 1e-12)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, best first (argpartition, then sort the k)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def rerank(queries: np.ndarray, table: np.ndarray, candidates: np.ndarray, keep: int,
           chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Re-score each query's candidate rows of `table` (normalized prefixes of one dim); keep the best
    `keep`. Queries go in chunks so the gathered (chunk, candidates, dim) block stays small."""
    dim = table.shape[1]
    out_i, out_s = [], []
    for start in range(0, len(queries), chunk):
        q = normalized_prefix(queries[start:start + chunk], dim)[:, :, None]  # (B, dim, 1)
        cand = candidates[start:start + chunk]
        scores = np.matmul(table[cand], q)[:, :, 0]  # (B, C)
        best = _top_k(scores, keep)
        out_i.append(np.take_along_axis(cand, best, axis=1))
        out_s.append(np.take_along_axis(scores, best, axis=1))
    return np.concatenate(out_i), np.concatenate(out_s)


class InMemoryIndex:
    """Exact in-memory funnel: the shortlist is a brute-force scan of normalized d0 prefixes (cached per d0)."""

    def __init__(self, items: np.ndarray, chunk: int = 256):
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.chunk = chunk  # queries per block: bounds the (chunk x N) score matrix in memory
        self._prefixes: dict[int, np.ndarray] = {}

    def prefix(self, dim: int) -> np.ndarray:
        if dim not in self._prefixes:
            self._prefixes[dim] = normalized_prefix(self.items, dim)
        return self._prefixes[dim]

    def shortlist(self, queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        table, q = self.prefix(dim), normalized_prefix(queries, dim)
        out_i, out_s = [], []
        for start in range(0, len(q), self.chunk):
            scores = q[start:start + self.chunk] @ table.T
            best = _top_k(scores, k)
            out_i.append(best)
            out_s.append(np.take_along_axis(scores, best, axis=1))
        return np.concatenate(out_i), np.concatenate(out_s)

    def search(self, queries: np.ndarray, funnel: Funnel, k: int) -> SearchResult:
        return funnel_search(self, queries, funnel, k)


class InMemoryFunnelIndex:
    """The exact in-memory reference behind the same interface as the Milvus backend
    (`MilvusFunnelIndex`): `search(queries, k) -> (hits per query, timings)` and `vector_of(id)`."""

    def __init__(self, items: np.ndarray, ids, labels, funnel: Funnel):
        self.index, self.funnel = InMemoryIndex(items), funnel
        self.ids, self.labels = [str(i) for i in ids], [str(label) for label in labels]
        self._row = {item_id: row for row, item_id in enumerate(self.ids)}

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[dict]], dict[str, float]]:
        result = self.index.search(queries, self.funnel, k)
        hits = [[{"id": self.ids[i], "score": float(s), "label": self.labels[i]} for i, s in zip(rows, scores)]
                for rows, scores in zip(result.indices, result.scores)]
        return hits, result.timings_ms

    def vector_of(self, item_id: str) -> np.ndarray:
        if item_id not in self._row:
            raise KeyError(item_id)
        return self.index.items[self._row[item_id]]


def funnel_search(index, queries: np.ndarray, funnel: Funnel, k: int) -> SearchResult:
    """Run `funnel` on an InMemoryIndex (shortlist by exact scan, re-rank from its prefix tables)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    stages = funnel.stages(k)
    timings = {}
    start = time.perf_counter()
    candidates, scores = index.shortlist(queries, *stages[0])
    timings[f"shortlist_d{stages[0][0]}"] = 1000 * (time.perf_counter() - start)
    for dim, keep in stages[1:]:
        start = time.perf_counter()
        candidates, scores = rerank(queries, index.prefix(dim), candidates, keep)
        timings[f"rerank_d{dim}"] = 1000 * (time.perf_counter() - start)
    return SearchResult(candidates[:, :k], scores[:, :k], timings)


def exact_search(items: np.ndarray, queries: np.ndarray, k: int, dim: int | None = None) -> SearchResult:
    """Brute-force cosine top-k at `dim` (default: full): the reference every funnel is measured against."""
    dim = dim or items.shape[1]
    return funnel_search(InMemoryIndex(items), queries, Funnel(dim, k), k)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k found (order ignored)."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))

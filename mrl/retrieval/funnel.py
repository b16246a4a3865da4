"""The funnel: stage 0 scans every item's d0-dim prefix and keeps k0 candidates; each later stage
re-scores the survivors with a longer prefix and keeps fewer (k_i = max(k, k_{i-1} // shrink)); the last
stage keeps k. Every prefix is L2-normalized before scoring, so scores are cosine similarities.

The shortlist prefix may be stored quantized (`quant`): int8 (one byte per dim) or binary (the sign bit of each
dim, compared by Hamming distance). Re-ranking is always float32, so quantization only changes which candidates
reach the re-rank."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

QUANTIZATIONS = ("float32", "int8", "binary")
BYTES_PER_DIM = {"float32": 4.0, "int8": 1.0, "binary": 0.125}


@dataclass(frozen=True)
class Funnel:
    d0: int  # shortlist prefix size
    k0: int  # shortlist size
    rerank_dims: tuple[int, ...] = ()  # longer prefixes, increasing; the last is usually the full dim
    shrink: int = 4  # each re-rank stage keeps 1/shrink of its input (never fewer than k)
    quant: str = "float32"  # how the shortlist prefix is stored: float32 | int8 | binary (see QUANTIZATIONS)

    def __post_init__(self):
        if self.quant not in QUANTIZATIONS:
            raise ValueError(f"funnel quant: {self.quant!r} is not one of {', '.join(QUANTIZATIONS)}")
        if self.quant == "binary" and self.d0 % 8:
            raise ValueError(f"funnel d0: a binary shortlist needs a multiple of 8 dims, got {self.d0}")

    def stages(self, k: int) -> list[tuple[int, int]]:
        """[(dim, keep), ...] for a final top-k. A quantized shortlist may be re-ranked at its own dim in float32."""
        dims = [d for d in self.rerank_dims if d > self.d0 or (d == self.d0 and self.quant != "float32")]
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

    def bytes_per_item(self) -> float:
        """Bytes of the shortlist's vectors per item (an HNSW graph comes on top): d0 x 4, d0 or d0 / 8."""
        return self.d0 * BYTES_PER_DIM[self.quant]

    def name(self) -> str:
        """E.g. "8@400 -> 64 -> 512", or "256:binary@400 -> 512" for a quantized shortlist."""
        head = f"{self.d0}@{self.k0}" if self.quant == "float32" else f"{self.d0}:{self.quant}@{self.k0}"
        return " -> ".join([head, *(str(dim) for dim, _ in self.stages(self.k0)[1:])])

    def to_dict(self) -> dict:
        return asdict(self) | {"rerank_dims": list(self.rerank_dims)}

    @classmethod
    def from_dict(cls, d: dict) -> Funnel:
        return cls(int(d["d0"]), int(d["k0"]), tuple(int(x) for x in d.get("rerank_dims", ())), int(d.get("shrink", 4)),
                   str(d.get("quant", "float32")))


@dataclass
class SearchResult:
    indices: np.ndarray  # (Q, k) row indices into the items, best first
    scores: np.ndarray  # (Q, k) cosine similarity at the last stage's dim
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, summed over queries


def normalized_prefix(x: np.ndarray, dim: int) -> np.ndarray:
    prefix = np.ascontiguousarray(x[..., :dim], dtype=np.float32)
    norm = np.sqrt(np.einsum("...d,...d->...", prefix, prefix))[..., None]  # np.linalg.norm's overhead shows per query
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


def rerank_rows(queries: np.ndarray, rows: np.ndarray, stages: list[tuple[int, int]],
                timings: dict[str, float] | None = None, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The cascade over each query's shortlisted rows: `rows` (Q, C, D) holds the C candidates' full embeddings
    (any float dtype; float16 storage is widened here). Each (dim, keep) stage re-scores the survivors with their
    normalized dim-prefix. Returns positions into the C candidates (Q, keep) and their last-stage scores."""
    out_p, out_s = [], []
    for start in range(0, len(queries), chunk):  # bounds the (chunk, C, dim) float32 block
        q, block = queries[start:start + chunk], rows[start:start + chunk]
        batch = np.arange(len(block))[:, None]
        pos = None  # first stage: every candidate, no gather
        for dim, keep in stages:
            began = time.perf_counter()
            survivors = normalized_prefix(block if pos is None else block[batch, pos], dim)
            scores = np.matmul(survivors, normalized_prefix(q, dim)[:, :, None])[:, :, 0]
            best = _top_k(scores, keep)
            pos, scores = (best if pos is None else pos[batch, best]), scores[batch, best]
            if timings is not None:
                timings[f"rerank_d{dim}"] = timings.get(f"rerank_d{dim}", 0.0) + 1000 * (time.perf_counter() - began)
        out_p.append(pos)
        out_s.append(scores)
    return np.concatenate(out_p), np.concatenate(out_s)


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


class ReferenceFunnelIndex:
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

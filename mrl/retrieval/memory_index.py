"""The `memory` serving backend: the funnel runs in this process, Milvus stays the system of record.

At load (and at every reload) the promoted collection is read from Milvus once, paged: ids, labels and the full
embeddings. The shortlist is a FAISS index over the d0 prefix (float32, int8 or binary, see `ShortlistIndex`);
the re-rank gathers the candidates' full embeddings from memory (float16 by default: half the memory; measured on
the demo's 70k embeddings, 1,000 held-out queries, 64@50 -> 512: recall@10 0.9933 vs 0.9935 in float32, 99.98% of
the top 10 identical, scores within 2.2e-5). A search costs one
FAISS call and a few small matrix products, with no round trip: what Milvus Lite, whose per-call cost grows
with the collection, cannot give.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mrl.errors import MRLError
from mrl.progress import progress
from mrl.retrieval.funnel import Funnel, SearchResult, normalized_prefix, rerank_rows
from mrl.retrieval.milvus_index import CollectionInfo, row_count
from mrl.retrieval.shortlist import ShortlistIndex
from mrl.retrieval.snapshot import open_snapshot, write_snapshot


def funnel_search_rows(shortlist: ShortlistIndex, full: np.ndarray, queries: np.ndarray, funnel: Funnel,
                       k: int) -> SearchResult:
    """Shortlist with `shortlist` (over funnel.d0), then the cascade over the candidates' rows of `full`. Row
    indices of -1 (HNSW found fewer candidates than asked) come back as -1 and are dropped by callers."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    stages = funnel.stages(k)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    candidates, scores = shortlist.search(queries, stages[0][1])
    timings[f"shortlist_d{funnel.d0}" + ("" if funnel.quant == "float32" else f"_{funnel.quant}")] = (
        1000 * (time.perf_counter() - started))
    if len(stages) > 1:
        rows = full[np.maximum(candidates, 0)]  # (Q, k0, D) gathered once for every stage
        positions, scores = rerank_rows(queries, rows, stages[1:], timings)
        candidates = np.take_along_axis(candidates, positions, axis=1)
    return SearchResult(candidates[:, :k], scores[:, :k], timings)


def read_collection(client, name: str, batch: int = 16_000) -> tuple[list[str], list[str], np.ndarray]:
    """Every row's id, label and full embedding (read_stored without extra fields)."""
    ids, labels, full, _ = read_stored(client, name, batch)
    return ids, labels, full


def read_stored(client, name: str, batch: int = 16_000, extra: tuple[str, ...] = ()
                ) -> tuple[list[str], list[str], np.ndarray, dict[str, list]]:
    """Every row's id, label, full embedding and the `extra` fields' values, paged with a query iterator (Milvus caps
    one query's offset + limit at 16,384 rows), with progress."""
    total = row_count(client, name)
    ids, labels, values, full = [], [], {f: [] for f in extra}, None
    bar = progress(None, f"reading {name} from Milvus", "row", total=total)
    iterator = client.query_iterator(name, batch_size=batch, filter="", output_fields=["id", "label", "full", *extra])
    try:
        while page := iterator.next():
            if full is None:
                full = np.empty((total, len(page[0]["full"])), dtype=np.float32)
            if len(ids) + len(page) > total:
                raise MRLError(f"Milvus collection {name}: more rows than its count ({total}) while reading")
            full[len(ids):len(ids) + len(page)] = [r["full"] for r in page]
            ids += [r["id"] for r in page]
            labels += [r["label"] for r in page]
            for f, kept in values.items():
                kept += [r[f] for r in page]
            bar.update(len(page))
    finally:
        iterator.close()
        bar.close()
    if full is None or len(ids) != total:
        raise MRLError(f"Milvus collection {name}: read {len(ids)} rows, expected {total}")
    return ids, labels, full, values


class MemoryFunnelIndex:
    """Funnel search in process over a collection read from Milvus. The same interface as `MilvusFunnelIndex`
    and the exact reference `ReferenceFunnelIndex`: `search(queries, k) -> (hits per query, timings)`,
    `vector_of(id)`, `sample_id()`, `info`, `name`, `client`."""

    in_process = True  # a search is CPU work in this process (no I/O): the service batches it (mrl.service.batching)

    def __init__(self, client, name: str, cfg, log: Callable[[str], None] | None = None,
                 snapshots: Path | None = None):
        """`snapshots`: the snapshot folder (mrl.retrieval.snapshot) to start from when it holds a valid snapshot
        of this collection; otherwise (and by default) the collection is read from Milvus."""
        self.client, self.name, self.cfg = client, name, cfg
        self.info = CollectionInfo.read(client, name)
        client.load_collection(name)  # a no-op when loaded; needed after a restart (Milvus Lite reopens it released)
        started = time.perf_counter()
        funnel, say = self.info.funnel, log or (lambda line: None)

        def warn(line: str) -> None:
            say(f"warning: {line}")

        found = open_snapshot(snapshots, self.info, cfg, row_count(client, name), warn) if snapshots else None
        if found is not None:
            self.ids, self.labels, self.full = found.ids, found.labels, found.full
            self.shortlist = ShortlistIndex.wrap(found.index, funnel.d0, funnel.quant, cfg.index_type, cfg.hnsw_ef)
            self.source = f"snapshot {snapshots / name}"
        else:
            self.ids, self.labels, full = read_collection(client, name)
            self.shortlist = ShortlistIndex(full, funnel.d0, funnel.quant, cfg.index_type, cfg.hnsw_m,
                                            cfg.hnsw_ef_construction, cfg.hnsw_ef)
            self.full = full.astype(np.float16) if cfg.rerank_dtype == "float16" else full
            self.source = "Milvus"
        self._row = {item_id: row for row, item_id in enumerate(self.ids)}
        self._tables: dict[int, np.ndarray] = {}  # the explorer's prefix tables, made at first use
        self._explore_lock = threading.Lock()
        self._bytes_per_item: float | None = None
        self.load_s = time.perf_counter() - started
        say(f"{name}: {len(self.ids):,} rows from {self.source} in {self.load_s:.1f}s ({funnel.name()} "
            f"{cfg.index_type} shortlist), {self.bytes_per_item():,.0f} bytes/item in memory")

    def write_snapshot(self, root: Path) -> Path:
        """Save what this index serves as the collection's snapshot under `root`, for replicas to start from."""
        return write_snapshot(root, self.info, self.cfg, self.ids, self.labels, self.full, self.shortlist.index,
                              self.shortlist.quant == "binary")

    def bytes_per_item(self) -> float:
        """Shortlist index (codes + graph) plus the re-rank table. Measured once: it serializes the FAISS index (at
        1M items, hundreds of MB), and /readyz asks for it on every probe."""
        if self._bytes_per_item is None:
            self._bytes_per_item = self.shortlist.bytes_per_item() + self.full.nbytes / max(1, len(self.ids))
        return self._bytes_per_item

    def search(self, queries: np.ndarray, k: int | None = None) -> tuple[list[list[dict]], dict[str, float]]:
        result = funnel_search_rows(self.shortlist, self.full, queries, self.info.funnel, k or self.info.k)
        hits = [[{"id": self.ids[i], "score": float(s), "label": self.labels[i]} for i, s in zip(rows, scores) if i >= 0]
                for rows, scores in zip(result.indices, result.scores)]
        return hits, result.timings_ms

    def explore(self, query: np.ndarray, k: int, d0: int, k0: int) -> tuple[list[dict], dict[str, float], str]:
        """The search page's explorer: funnel d0@k0 -> the served re-rank dims, by scanning float32 prefix tables
        (made at the first call per dim, not timed: the served index keeps float16, and an ANN graph at the served
        d0 only). Timed like `exact`, so their ratio is fair; the served funnel (FAISS) is faster at equal d0.
        Returns (hits, timings in ms, the funnel's name)."""
        served = self.info.funnel
        funnel = Funnel(d0, k0, tuple(d for d in served.rerank_dims if d > d0) or (self.full.shape[1],), served.shrink)
        query = np.asarray(query, dtype=np.float32)[None, :]
        stages, timings = funnel.stages(k), {}
        self._table(d0)
        started = time.perf_counter()
        rows, scores = self._scan(query[0], d0, stages[0][1])
        timings[f"scan_d{d0}"] = 1000 * (time.perf_counter() - started)
        if len(stages) > 1:
            positions, scores = rerank_rows(query, self.full[rows][None], stages[1:], timings)
            rows, scores = rows[positions[0]], scores[0]
        return self._hits(rows[:k], scores[:k]), timings, funnel.name()

    def exact(self, query: np.ndarray, k: int) -> tuple[list[dict], float]:
        """Exact full-dim top-k by the explorer's scan, and its time in ms."""
        self._table(self.full.shape[1])
        started = time.perf_counter()
        rows, scores = self._scan(np.asarray(query, dtype=np.float32), self.full.shape[1], k)
        return self._hits(rows, scores), 1000 * (time.perf_counter() - started)

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
        return [{"id": self.ids[i], "score": float(s), "label": self.labels[i]} for i, s in zip(rows, scores)]

    def _table(self, dim: int) -> np.ndarray:
        """The normalized float32 dim-prefixes of every item, contiguous, made at first use and kept (the explorer's
        memory: up to the sum of the nesting dims x N x 4 bytes, about twice the float32 catalogue)."""
        with self._explore_lock:
            if dim not in self._tables:
                self._tables[dim] = normalized_prefix(self.full, dim)
            return self._tables[dim]

    def _scan(self, query: np.ndarray, dim: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-`keep` by cosine of the dim-prefixes over every item (call `_table(dim)` first: not timed)."""
        scores = self._tables[dim] @ normalized_prefix(query, dim)
        keep = min(keep, len(scores))
        top = np.argpartition(-scores, keep - 1)[:keep]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    def vector_of(self, item_id: str) -> np.ndarray:
        """The stored full embedding of an item; MRLError if the id is unknown."""
        if item_id not in self._row:
            raise MRLError(f"unknown item id {item_id!r} in {self.name}")
        return self.full[self._row[item_id]].astype(np.float32)

    def sample_id(self) -> str:
        return self.ids[0]

"""Exact full-dim search over a whole served collection: the ground truth the service's live recall audit
(mrl.service.audit) compares the served funnel with.

The memory backend has it (`MemoryFunnelIndex.exact`: a scan of a normalized float32 table of every item, made at
first use). The milvus backend holds no vectors, so `MilvusExactSearch` asks a Milvus server for a brute-force search
of the `full` field (its FLAT index) by cosine: one round trip, nothing held in this process. Cosine, not the inner
product: stored full embeddings need not be unit length, and the funnel ranks by cosine. Otherwise the stored vectors
are read once, paged, and scanned in process as the memory backend does: on Milvus Lite (its brute-force search is a
Python re-implementation: measured 1.2 s a query at 70k x 512 on the busy 2-core machine, against 25 s to read the
vectors once and 24 ms a scan; bench/results/audit.md), on Milvus 2.3 (`full` is an ARRAY field, not searchable), and
on a server that refuses the COSINE metric on a collection whose `full` index was built with IP (before this module).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import normalized_prefix
from mrl.retrieval.memory_index import read_collection

ExactSearch = Callable[[np.ndarray, int], tuple[list[dict], float]]  # (query, k) -> (hits best first, ms)


def exact_search_for(index) -> ExactSearch:
    """The exact search over `index`'s whole collection: its own (memory backend) or through Milvus."""
    if hasattr(index, "exact"):
        return index.exact
    return MilvusExactSearch(index.client, index.name)


def top_by_cosine(table: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the top-k of `table` (normalized rows) by cosine with `query`, best first, and their scores."""
    scores = table @ normalized_prefix(query, table.shape[1])
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


class MilvusExactSearch:
    """Exact top-k by cosine over the collection `name` in Milvus (see the module's docstring for the two ways)."""

    def __init__(self, client, name: str):
        self.client, self.name = client, name
        lite = client.get_server_version().startswith("milvus_lite")
        self.way = "milvus" if mi.full_layout_of(client, name) == "vector" and not lite else "table"
        self._rows: tuple[list[str], list[str], np.ndarray] | None = None  # ids, labels, normalized table

    def __call__(self, query: np.ndarray, k: int) -> tuple[list[dict], float]:
        started = time.perf_counter()
        query = np.asarray(query, dtype=np.float32)
        if self.way == "milvus":
            try:
                return self._search(query, k), 1000 * (time.perf_counter() - started)
            except Exception as e:  # MilvusException; only a refused metric means Milvus cannot do it at all
                if "metric" not in str(e).lower():
                    raise
                self.way = "table"
        return self._scan(query, k), 1000 * (time.perf_counter() - started)

    def _search(self, query: np.ndarray, k: int) -> list[dict]:
        rows = self.client.search(self.name, data=[normalized_prefix(query, len(query))], anns_field="full", limit=k,
                                  output_fields=["label"], search_params={"metric_type": "COSINE"})[0]
        return [{"id": h["id"], "score": float(h["distance"]), "label": h["entity"]["label"]} for h in rows]

    def _scan(self, query: np.ndarray, k: int) -> list[dict]:
        if self._rows is None:  # once per collection: N x D x 4 bytes in this process
            ids, labels, full = read_collection(self.client, self.name)
            self._rows = ids, labels, normalized_prefix(full, full.shape[1])
        ids, labels, table = self._rows
        top, scores = top_by_cosine(table, query, k)
        return [{"id": ids[i], "score": float(s), "label": labels[i]} for i, s in zip(top, scores)]

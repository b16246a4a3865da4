"""The funnel's first stage in process: a FAISS index over every item's d0-dim prefix, stored as float32, int8
(scalar quantized, one byte per dim) or binary (the sign of each dim, compared by Hamming distance), searched
with HNSW (approximate, the default) or an exact scan (FLAT)."""

from __future__ import annotations

import time

import faiss
import numpy as np

from mrl.retrieval.funnel import QUANTIZATIONS, normalized_prefix


def sign_bits(x: np.ndarray, dim: int) -> np.ndarray:
    """The sign of each of the first `dim` dims, packed 8 to a byte: the binary code of a prefix."""
    return np.packbits(np.asarray(x[..., :dim]) > 0, axis=-1)


class ShortlistIndex:
    """FAISS over one prefix. `search(queries, k)` returns (row indices, scores), best first; a row index of -1
    means HNSW found fewer than k. Scores are cosine (float32), approximately cosine (int8) or minus the
    Hamming distance (binary)."""

    def __init__(self, items: np.ndarray, d0: int, quant: str = "float32", index_type: str = "HNSW",
                 hnsw_m: int = 16, ef_construction: int = 200, ef_search: int = 0):
        if quant not in QUANTIZATIONS:
            raise ValueError(f"quant: {quant!r} is not one of {', '.join(QUANTIZATIONS)}")
        self.d0, self.quant, self.index_type, self.ef_search = d0, quant, index_type, ef_search
        started = time.perf_counter()
        hnsw = index_type == "HNSW"
        if quant == "binary":
            self.index = faiss.IndexBinaryHNSW(d0, hnsw_m) if hnsw else faiss.IndexBinaryFlat(d0)
            codes = sign_bits(items, d0)
        else:
            codes = normalized_prefix(items, d0)
            ip = faiss.METRIC_INNER_PRODUCT
            if quant == "int8":
                sq8 = faiss.ScalarQuantizer.QT_8bit  # per-dim min/max learned from the items, 256 levels
                self.index = faiss.IndexHNSWSQ(d0, sq8, hnsw_m, ip) if hnsw else faiss.IndexScalarQuantizer(d0, sq8, ip)
                self.index.train(codes)
            else:
                self.index = faiss.IndexHNSWFlat(d0, hnsw_m, ip) if hnsw else faiss.IndexFlatIP(d0)
        if hnsw:
            self.index.hnsw.efConstruction = ef_construction
        self.index.add(codes)
        self.build_s = time.perf_counter() - started

    @classmethod
    def wrap(cls, index, d0: int, quant: str, index_type: str, ef_search: int = 0) -> ShortlistIndex:
        """A ShortlistIndex over an index built earlier (a snapshot's, read from disk)."""
        self = cls.__new__(cls)
        self.d0, self.quant, self.index_type, self.ef_search, self.index, self.build_s = (
            d0, quant, index_type, ef_search, index, 0.0)
        return self

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        params = None
        if self.index_type == "HNSW":  # HNSW returns at most efSearch results; 0 = 2 x k, as for Milvus. Passed
            # per call, not set on the index, so concurrent requests with different k cannot race.
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search or 2 * k, k))
        if self.quant == "binary":
            distances, indices = self.index.search(sign_bits(queries, self.d0), k, params=params)
            return indices, -distances.astype(np.float32)
        scores, indices = self.index.search(normalized_prefix(queries, self.d0), k, params=params)
        return indices, scores

    def bytes_per_item(self) -> float:
        """Codes plus graph links, as FAISS serializes them."""
        serialize = faiss.serialize_index_binary if self.quant == "binary" else faiss.serialize_index
        return len(serialize(self.index)) / max(1, len(self))

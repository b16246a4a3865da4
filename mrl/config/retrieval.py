"""The registry and retrieval sections: which model serves, and the funnel and index it serves with."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mrl.config.base import _Section


class RegistryConfig(_Section):
    model_name: str = "fashion-mnist-mrl"  # MLflow registered model name
    experiment: str = "mrl"  # MLflow experiment of training runs
    primary_metric: str = "knn_top1"  # evaluation metric the promotion gate compares at every nesting dim
    tolerance: float = Field(0.005, ge=0)  # challenger may trail the champion by this much at a dim
    min_first: float = Field(0.5, ge=0)  # with no champion yet, every dim must reach this absolute floor


class RetrievalConfig(_Section):
    # Funnel search: shortlist with a d0-dim prefix, re-rank with longer ones. Candidates are measured on
    # held-out queries and the cheapest that reaches target_recall (recall@k vs exact full-dim) is chosen.
    k: int = Field(10, gt=0)  # results per query, and the k of recall@k
    target_recall: float = Field(0.99, gt=0, le=1)
    candidate_d0: list[int] = [8, 16, 32, 64]  # shortlist prefix sizes tried (each must be a nesting dim)
    candidate_k0: list[int] = [50, 100, 200, 400, 800, 1600]  # shortlist sizes tried
    cascades: list[list[int]] = [[512], [64, 512]]  # re-rank dims tried after the shortlist
    shrink: int = Field(4, ge=2)  # each cascade stage keeps 1/shrink of its input
    max_queries: int = Field(500, gt=0)  # held-out queries used to choose the funnel
    choose_sample: int = Field(100_000, gt=0)  # catalogue rows the funnel is chosen on (larger catalogues: a sample)
    shards: int = Field(1, gt=0)  # catalogue shards embedded and inserted in parallel (KFP ParallelFor)
    # Milvus index of the d0 field: HNSW (fast, approximate) or FLAT (exact scan).
    index_type: Literal["HNSW", "FLAT"] = "HNSW"
    hnsw_m: int = Field(16, gt=0)
    hnsw_ef_construction: int = Field(40, gt=0)  # recall of 200 at 1/4 the build time (Fashion-MNIST embeddings)
    hnsw_ef: int = Field(0, ge=0)  # search-time ef; 0 = 2 x k0 (HNSW needs ef >= the shortlist size)
    collection_prefix: str = "items"  # collections are <prefix>_v<model version>; the alias is <prefix>
    keep_last: int = Field(2, ge=2)  # versioned collections kept (current + previous for rollback)
    drop_grace_s: float = Field(600.0, ge=0)  # a collection the alias left is kept at least this long
    insert_batch: int = Field(10_000, gt=0)  # rows per Milvus insert
    verify_queries: int = Field(500, gt=0)  # of those queries, how many must meet the target through Milvus
    # Quantized shortlists (memory backend only): the d0 prefix stored as int8 (1 byte/dim) or sign bits (1 bit/dim,
    # Hamming distance), always re-ranked in float32. Binary codes need more dims, hence their own d0 list.
    quantizations: list[Literal["float32", "int8", "binary"]] = ["float32", "int8", "binary"]  # shortlist kinds tried
    candidate_binary_d0: list[int] = [64, 128, 256, 512]  # binary shortlist prefix sizes tried (multiples of 8)
    timed_queries: int = Field(100, gt=0)  # of the held-out queries, how many time each candidate (p50 latency)
    # Where the funnel runs when served: memory = read the promoted collection from Milvus at load and search in
    # process (FAISS); milvus = one Milvus round trip per query batch; auto = memory for a Milvus Lite file,
    # milvus for a server URL.
    serve_backend: Literal["auto", "memory", "milvus"] = "auto"
    rerank_dtype: Literal["float16", "float32"] = "float16"  # memory backend: storage of the full vectors
    # Memory backend: promotion writes what it serves (shortlist index, re-rank table, ids, labels) here, checksummed,
    # and replicas start from it in seconds instead of reading Milvus (mrl.retrieval.snapshot). Default: beside a
    # Milvus Lite data directory (<dir>.snapshots); none for a Milvus server unless set (storage replicas mount).
    snapshot_dir: str | None = None
    # Image items' PNG thumbnails stored in the collection (~500 bytes each at 28x28; at most 96 px wide), served at
    # GET /items/{id}/thumbnail for the search page.
    thumbnails: bool = True
    # The search page's funnel explorer (POST /search with "funnel" or "exact"; memory backend only): any d0/k0 and
    # exact full-dim search, on float32 prefix tables made at first use per dim (up to ~2 x N x D x 4 bytes).
    explorer: bool = True
    # The service's live recall audit: this share of external item searches (0 = off, 1 = every one) is re-run as an
    # exact full-dim search in a background thread and compared with what the funnel answered (recall@k on /metrics,
    # audit-*.jsonl beside the query log for `mrl drift`). Never delays a response: a full queue drops the query.
    audit_fraction: float = Field(0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _check_binary_dims(self) -> RetrievalConfig:
        odd = [d for d in self.candidate_binary_d0 if d % 8]
        if odd:
            raise ValueError(f"candidate_binary_d0: {odd} are not multiples of 8 (sign bits are packed 8 to a byte)")
        return self

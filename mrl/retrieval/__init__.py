"""Funnel (adaptive) retrieval over Matryoshka embeddings: shortlist with a small prefix, re-rank with
longer ones. An exact in-memory backend and a Milvus backend share one Funnel description."""

from mrl.retrieval.funnel import Funnel, InMemoryIndex, ReferenceFunnelIndex, SearchResult, exact_search, funnel_search

__all__ = ["Funnel", "InMemoryIndex", "ReferenceFunnelIndex", "SearchResult", "exact_search", "funnel_search"]

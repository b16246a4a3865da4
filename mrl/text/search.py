"""Search a text dataset's documents with a query text: the query embedded by the dataset's own encoder, then (with an
adapter) through the adapter, compared with every document on a prefix of `dim` dims (exact cosine search).

This searches the artifact in memory, to try a prefix size by hand; the served index (Milvus) is `mrl promote`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrl.config import TextConfig
from mrl.errors import MRLError
from mrl.retrieval.funnel import normalized_prefix
from mrl.text.adapter import apply_adapter, load_adapter
from mrl.text.artifact import load_text_dataset
from mrl.text.encoder import embed_texts, model_key, resolve_model_dir


def search_text(query: str, data_path: str | Path, cfg: TextConfig, model_path: str | Path | None = None,
                dim: int | None = None, k: int = 10) -> tuple[list[dict], int]:
    """The k documents nearest `query` (id, text, score), and the dim they were compared at."""
    if not query.strip():
        raise MRLError("--text: the query is empty")
    td = load_text_dataset(data_path)
    model_dir = resolve_model_dir(td.model)
    if model_key(model_dir) != td.model_key:
        raise MRLError(f"{data_path}: its encoder {td.model} has changed since ingest (different files); ingest again")
    q, _ = embed_texts([query], cfg.model_copy(update={"model": str(model_dir), "cache_dir": ""}), log=lambda _: None)
    docs = td.documents.x
    if model_path is not None:
        loaded = load_adapter(model_path)
        if loaded.meta["text_model_key"] != td.model_key:
            raise MRLError(f"{model_path}: trained on embeddings of {loaded.meta['text_model']}, not {td.model}")
        q, docs = apply_adapter(loaded.adapter, q), apply_adapter(loaded.adapter, docs)
    dim = dim or td.dim
    if not 0 < dim <= td.dim:
        raise MRLError(f"--dim: {dim} is outside 1..{td.dim}")
    scores = normalized_prefix(docs, dim) @ normalized_prefix(q, dim)[0]
    top = np.argsort(-scores, kind="stable")[:k]
    hits = [{"id": str(td.documents.ids[i]), "text": str(td.doc_texts[i]), "score": float(scores[i])} for i in top]
    return hits, dim

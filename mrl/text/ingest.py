"""`mrl ingest --source text`: read the table and pairs, embed every text with the frozen encoder, write the artifact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.config import TextConfig
from mrl.data.artifact import Dataset
from mrl.text.artifact import TextDataset, save_text_dataset
from mrl.text.encoder import EmbedStats, embed_texts, model_key, resolve_model_dir
from mrl.text.readers import read_text_corpus


@dataclass(frozen=True)
class TextIngestResult:
    path: Path
    documents: int
    queries: int
    train_queries: int
    test_queries: int
    pairs: int
    dim: int
    embedding: EmbedStats


def ingest_text(input_path: str | Path, output_path: str | Path, cfg: TextConfig, pairs_path: str | Path | None = None,
                log: Callable[[str], None] = print) -> TextIngestResult:
    """Everything is read and checked before the (slow) embedding and before anything is written."""
    corpus = read_text_corpus(input_path, cfg, pairs_path)
    model_dir = resolve_model_dir(cfg.model)
    n_docs = len(corpus.doc_ids)
    vectors, stats = embed_texts(corpus.doc_texts + corpus.query_texts, cfg, log)
    classes = np.array(sorted({label for label in corpus.doc_labels if label is not None}), dtype=str)
    index = {name: i for i, name in enumerate(classes)}
    documents = Dataset(
        "vectors", vectors[:n_docs], np.array(corpus.doc_ids, dtype=str),
        np.array([index.get(label, -1) for label in corpus.doc_labels], dtype=np.int64),
        np.full(n_docs, "train"),  # documents are the catalogue; the held-out part of text data is its queries
        classes,
    )
    pairs = np.array(corpus.pairs, dtype=np.int64).reshape(-1, 2)
    td = TextDataset(
        documents, np.array(corpus.doc_texts, dtype=str), np.array(corpus.query_ids, dtype=str),
        np.array(corpus.query_texts, dtype=str), vectors[n_docs:], np.array(corpus.query_split, dtype=str),
        pairs[:, 0], pairs[:, 1], str(model_dir), model_key(model_dir),
    )
    path = save_text_dataset(td, output_path)
    n_test = int((td.query_split == "test").sum())
    return TextIngestResult(path, n_docs, len(td.query_ids), len(td.query_ids) - n_test, n_test, len(pairs),
                            td.dim, stats)

"""The text dataset artifact: one .npz that every other stage can read as a plain "vectors" dataset.

The documents are the dataset proper (`load_dataset` sees kind "vectors": their base embeddings, ids, labels, all in
the train split), so the catalogue can be validated, indexed and promoted like any embeddings dataset. Alongside, in
the same file, under `text_*` / `query_*` / `pair_*` keys that `load_dataset` ignores: the document texts, the
queries (texts, base embeddings, train/test split) and the (query, document) pairs, plus the encoder they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.data.artifact import Dataset, atomic_write, check_dataset
from mrl.errors import MRLError

FORMAT = "mrl-text/1"
TEXT_FIELD = "text"  # the Milvus field a promoted text collection stores each document's text in


@dataclass(frozen=True)
class TextDataset:
    documents: Dataset  # kind "vectors": base embeddings (N, D) float32, ids, labels
    doc_texts: np.ndarray  # str (N,)
    query_ids: np.ndarray  # str (Q,)
    query_texts: np.ndarray  # str (Q,)
    query_x: np.ndarray  # float32 (Q, D): base embeddings of the queries
    query_split: np.ndarray  # str (Q,): "train" / "test"
    pair_query: np.ndarray  # int64 (P,): query index of each pair
    pair_doc: np.ndarray  # int64 (P,): its relevant document's index
    model: str  # the encoder's directory
    model_key: str  # hash of the encoder's files (the embedding cache's key)

    @property
    def dim(self) -> int:
        return int(self.documents.x.shape[1])

    def pairs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(query indices, document indices) of the pairs whose query is in `split`."""
        keep = self.query_split[self.pair_query] == split
        return self.pair_query[keep], self.pair_doc[keep]

    def relevant(self, split: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """Queries of `split` that have pairs, and each one's relevant document indices."""
        q, d = self.pairs(split)
        order = np.argsort(q, kind="stable")
        queries, starts = np.unique(q[order], return_index=True)
        return queries, np.split(d[order], starts[1:])


def check_text_dataset(td: TextDataset, source: str) -> None:
    check_dataset(td.documents, source)
    n_docs, n_queries = len(td.documents), len(td.query_ids)
    if td.documents.kind != "vectors" or len(td.doc_texts) != n_docs:
        raise MRLError(f"{source}: text dataset documents must be vectors with one text each")
    if td.query_x.shape != (n_queries, td.dim) or len(td.query_texts) != n_queries or len(td.query_split) != n_queries:
        raise MRLError(f"{source}: {n_queries} queries but query arrays of other lengths or dims")
    if len(td.pair_query) != len(td.pair_doc) or not len(td.pair_query):
        raise MRLError(f"{source}: no (query, document) pairs")
    if td.pair_query.min() < 0 or td.pair_query.max() >= n_queries or td.pair_doc.min() < 0 \
            or td.pair_doc.max() >= n_docs:
        raise MRLError(f"{source}: pairs refer to queries or documents that do not exist")
    if set(np.unique(td.query_split).tolist()) - {"train", "test"}:
        raise MRLError(f"{source}: query splits other than train/test")
    if not np.isfinite(td.query_x).all():
        raise MRLError(f"{source}: query vectors contain NaN or inf")


def save_text_dataset(td: TextDataset, path: str | Path) -> Path:
    path = Path(path)
    check_text_dataset(td, str(path))
    ds = td.documents
    arrays = dict(  # the keys load_dataset reads, as save_dataset writes them
        kind=np.array(ds.kind), x=ds.x, ids=ds.ids.astype(str), labels=ds.labels.astype(np.int64),
        split=ds.split.astype(str), classes=ds.classes.astype(str),
    )
    arrays |= dict(
        text_format=np.array(FORMAT), text_model=np.array(td.model), text_model_key=np.array(td.model_key),
        text_documents=td.doc_texts.astype(str), query_ids=td.query_ids.astype(str),
        query_texts=td.query_texts.astype(str), query_x=td.query_x.astype(np.float32),
        query_split=td.query_split.astype(str), pair_query=td.pair_query.astype(np.int64),
        pair_doc=td.pair_doc.astype(np.int64),
    )
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return path


def is_text_dataset(path: str | Path) -> bool:
    """Whether `path` is a text dataset (reads only the archive's directory, not the arrays)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "text_format" in z.files
    except (OSError, ValueError):
        return False


def load_text_dataset(path: str | Path, check: bool = True) -> TextDataset:
    """Load a text dataset; check=False skips the invariants (for the validation stage, which reports them)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "text_format" not in z.files:
                raise MRLError(f"{path}: not a text dataset (no queries or pairs; make one with "
                               "`mrl ingest --source text`)")
            if str(z["text_format"]) != FORMAT:
                raise MRLError(f"{path}: text dataset format {z['text_format']} (expected {FORMAT})")
            td = TextDataset(
                Dataset(str(z["kind"]), z["x"], z["ids"], z["labels"], z["split"], z["classes"]),
                z["text_documents"], z["query_ids"], z["query_texts"], z["query_x"], z["query_split"],
                z["pair_query"], z["pair_doc"], str(z["text_model"]), str(z["text_model_key"]),
            )
    except FileNotFoundError:
        raise MRLError(f"{path}: dataset file not found") from None
    except (OSError, ValueError, KeyError) as e:
        raise MRLError(f"{path}: not a text dataset artifact ({e})") from None
    if check:
        check_text_dataset(td, str(path))
    return td

"""Read a text table (JSONL, CSV or Parquet) and its pairs into documents, queries and (query, document) pairs.

Two ways to give pairs:
  1. one table: rows with a value in `text.positive_column` are queries whose relevant document has that id; the
     other rows are the documents;
  2. a table of documents plus a pairs file (`text.pairs`) of query text -> document id; rows with the same query
     text are one query with several relevant documents.
Every problem is a one-line MRLError naming the file and the row (JSONL: the line), and nothing is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mrl.config import TextConfig
from mrl.errors import MRLError

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
            ".pq": "parquet"}


@dataclass
class Table:
    path: Path
    columns: dict[str, list]  # column -> values (None where missing)
    where: Callable[[int], str]  # row index -> "row 3" / "line 3", as the user finds it in the file

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def column(self, name: str, what: str) -> list:
        if name not in self.columns:
            raise MRLError(f"{self.path}: missing {what} column {name!r} (columns: {sorted(self.columns)})")
        return self.columns[name]


@dataclass
class TextCorpus:
    doc_ids: list[str]
    doc_texts: list[str]
    doc_labels: list[str | None]
    query_ids: list[str] = field(default_factory=list)
    query_texts: list[str] = field(default_factory=list)
    query_split: list[str] = field(default_factory=list)  # "train" / "test"
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (query index, document index)


def _read_jsonl(path: Path) -> Table:
    rows, lines = [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines are allowed between records
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MRLError(f"{path}: line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise MRLError(f"{path}: line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            lines.append(n)
    names = list(dict.fromkeys(k for row in rows for k in row))
    return Table(path, {k: [row.get(k) for row in rows] for k in names}, lambda i: f"line {lines[i]}")


def _read_csv(path: Path) -> Table:
    try:  # every cell a string: ids like "007" stay as written; empty cells are ""
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise MRLError(f"{path}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    return Table(path, {str(k): frame[k].tolist() for k in frame.columns}, lambda i: f"row {i + 1}")


def _read_parquet(path: Path) -> Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise MRLError(f"{path}: not a readable Parquet file ({e})") from None
    return Table(path, table.to_pydict(), lambda i: f"row {i + 1}")


def read_table(path: str | Path) -> Table:
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise MRLError(f"{path}: unknown table format {path.suffix!r} (expected {', '.join(sorted(SUFFIXES))})")
    if not path.is_file():
        raise MRLError(f"{path}: file not found")
    try:
        table = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[fmt](path)
    except UnicodeDecodeError as e:
        raise MRLError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if len(table) == 0:
        raise MRLError(f"{path}: no rows")
    return table


def _value(v) -> str | None:
    """A cell as a string, None when missing (null, NaN, or only whitespace)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v)
    return s if s.strip() else None


def _required(table: Table, values: list, i: int, name: str, what: str) -> str:
    v = _value(values[i])
    if v is None:
        raise MRLError(f"{table.path}: {table.where(i)}: empty {what} in column {name!r}")
    return v


def _split_of(table: Table, values: list | None, i: int, name: str | None) -> str | None:
    if values is None:
        return None
    v = _value(values[i])
    if v not in ("train", "test"):
        what = f"split {v!r}" if v is not None else "empty split"
        raise MRLError(f"{table.path}: {table.where(i)}: {what} in column {name!r} (expected train or test)")
    return v


def _assign_splits(splits: list[str | None], cfg: TextConfig) -> list[str]:
    """Queries without a split column: exactly round(test_fraction x N) at random (at least 1 each way from 2 queries)."""
    if all(s is not None for s in splits):
        return splits
    n = len(splits)
    n_test = min(n - 1, max(1, round(cfg.test_fraction * n))) if n >= 2 else 0
    test = set(np.random.default_rng(cfg.split_seed).permutation(n)[:n_test].tolist())
    return ["test" if i in test else "train" for i in range(n)]


def read_text_corpus(input_path: str | Path, cfg: TextConfig, pairs_path: str | Path | None = None) -> TextCorpus:
    """Documents, queries and pairs from the table at `input_path` (and the pairs file, form 2)."""
    table = read_table(input_path)
    pairs_path = pairs_path or cfg.pairs or None
    ids = table.column(cfg.id_column, "id")
    texts = table.column(cfg.text_column, "text")
    labels = table.columns.get(cfg.label_column) if cfg.label_column else None
    positives = table.columns.get(cfg.positive_column)
    if positives is not None and pairs_path:
        raise MRLError(f"{table.path}: has a {cfg.positive_column!r} column and a pairs file {pairs_path} is given: "
                       "use one form of pairs (text.positive_column or text.pairs)")
    if positives is None and not pairs_path:
        raise MRLError(f"{table.path}: no pairs: missing positive column {cfg.positive_column!r} "
                       f"(columns: {sorted(table.columns)}) and no pairs file (text.pairs, --pairs)")
    splits = table.columns.get(cfg.split_column) if (cfg.split_column and positives is not None) else None

    corpus = TextCorpus([], [], [])
    seen: dict[str, int] = {}
    doc_of: dict[str, int] = {}
    query_rows: list[tuple[int, str]] = []  # (row, positive id) of form-1 queries
    query_splits: list[str | None] = []
    for i in range(len(table)):
        row_id = _required(table, ids, i, cfg.id_column, "id")
        if row_id in seen:
            raise MRLError(f"{table.path}: {table.where(i)}: duplicate id {row_id!r} (first at {table.where(seen[row_id])})")
        seen[row_id] = i
        text = _required(table, texts, i, cfg.text_column, "text")
        positive = _value(positives[i]) if positives is not None else None
        if positive is None:
            doc_of[row_id] = len(corpus.doc_ids)
            corpus.doc_ids.append(row_id)
            corpus.doc_texts.append(text)
            corpus.doc_labels.append(_value(labels[i]) if labels is not None else None)
        else:
            corpus.query_ids.append(row_id)
            corpus.query_texts.append(text)
            query_splits.append(_split_of(table, splits, i, cfg.split_column))
            query_rows.append((i, positive))
    if not corpus.doc_ids:
        raise MRLError(f"{table.path}: no documents (every row has a {cfg.positive_column!r} value)")
    if positives is not None:
        for q, (i, positive) in enumerate(query_rows):
            if positive not in doc_of:
                raise MRLError(f"{table.path}: {table.where(i)}: positive {positive!r} in column "
                               f"{cfg.positive_column!r} is not the id of a document in this table")
            corpus.pairs.append((q, doc_of[positive]))
    else:
        query_splits = _read_pairs(Path(pairs_path), cfg, corpus, doc_of, table.path)
    if not corpus.pairs:
        raise MRLError(f"{table.path}: no queries (no row has a value in column {cfg.positive_column!r})")
    corpus.query_split = _assign_splits(query_splits, cfg)
    return corpus


def _read_pairs(path: Path, cfg: TextConfig, corpus: TextCorpus, doc_of: dict[str, int], table_path: Path) -> list:
    """Form 2: query text -> document id rows; the same query text is one query (with all its documents)."""
    pairs = read_table(path)
    queries = pairs.column(cfg.pair_query_column, "query")
    documents = pairs.column(cfg.pair_document_column, "document")
    splits = pairs.columns.get(cfg.split_column) if cfg.split_column else None
    query_of: dict[str, int] = {}
    query_splits: list[str | None] = []
    seen_pairs: set[tuple[int, int]] = set()
    for i in range(len(pairs)):
        text = _required(pairs, queries, i, cfg.pair_query_column, "query text")
        doc_id = _required(pairs, documents, i, cfg.pair_document_column, "document id")
        if doc_id not in doc_of:
            raise MRLError(f"{path}: {pairs.where(i)}: document {doc_id!r} in column {cfg.pair_document_column!r} "
                           f"is not an id in {table_path}")
        split = _split_of(pairs, splits, i, cfg.split_column)
        q = query_of.get(text)
        if q is None:
            q = query_of[text] = len(corpus.query_ids)
            corpus.query_ids.append(f"q{q}")
            corpus.query_texts.append(text)
            query_splits.append(split)
        elif query_splits[q] != split:
            raise MRLError(f"{path}: {pairs.where(i)}: query {text[:40]!r} is in split {split!r} here and "
                           f"{query_splits[q]!r} in an earlier row")
        if (q, doc_of[doc_id]) not in seen_pairs:
            seen_pairs.add((q, doc_of[doc_id]))
            corpus.pairs.append((q, doc_of[doc_id]))
    return query_splits

"""Reading the vectors to adapt: a Milvus collection (ours or any other: an id field and a float vector field named by
the user) or a vectors file (Parquet, .npz, .npy). Nothing is re-encoded: these vectors are the base embedding."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mrl.config import AdaptConfig
from mrl.errors import MRLError
from mrl.progress import progress
from mrl.retrieval import milvus_index as mi

VECTOR_TYPES = {"FLOAT_VECTOR", "ARRAY"}  # float vector fields; ARRAY of FLOAT is how Milvus Lite stores ours


@dataclass
class Vectors:
    """Base vectors with their ids (and labels, where the source has them), and where they came from."""

    ids: np.ndarray  # str, unique
    x: np.ndarray  # float32 (N, D)
    labels: np.ndarray | None  # str, or None
    source: str  # "milvus:<uri>#<collection>" or the file's path
    name: str  # a short name for the registry and the alias: the collection's, or the file's stem

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def digest(self) -> str:
        """sha256 of the ids and vectors (the lineage of what was adapted)."""
        h = hashlib.sha256()
        h.update("\n".join(self.ids.tolist()).encode())
        h.update(np.ascontiguousarray(self.x).tobytes())
        return h.hexdigest()


def checked(vectors: Vectors, where: str) -> Vectors:
    """MRLError unless the vectors are finite, non-zero, of one dimension, with unique ids."""
    if not len(vectors.ids):
        raise MRLError(f"{where}: no vectors to adapt")
    bad = np.flatnonzero(~np.isfinite(vectors.x).all(axis=1))
    if len(bad):
        first = str(vectors.ids[bad[0]])
        raise MRLError(f"{where}: {len(bad):,} vectors hold NaN or infinite values (first: id {first!r})")
    zero = np.flatnonzero(np.linalg.norm(vectors.x, axis=1) == 0)
    if len(zero):
        raise MRLError(f"{where}: {len(zero):,} vectors are all zeros (first: id {str(vectors.ids[zero[0]])!r})")
    unique, counts = np.unique(vectors.ids, return_counts=True)
    if (counts > 1).any():
        twice = str(unique[counts > 1][0])
        raise MRLError(f"{where}: id {twice!r} appears {counts.max()} times; ids must be unique")
    return vectors


def _matrix(rows: list, where: str, field: str) -> np.ndarray:
    """Rows of vectors as one float32 matrix; MRLError naming the field on mixed dimensions."""
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise MRLError(f"{where}: adapt.vector_field {field!r}: vectors of different dimensions {sorted(dims)[:5]}")
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)


def read_collection(client, collection: str, cfg: AdaptConfig, uri: str,
                    log: Callable[[str], None] | None = None) -> Vectors:
    """Every row's id, vector (and label) of a Milvus collection (or alias), with progress."""
    where = f"Milvus collection {collection}"
    if not client.has_collection(collection) and mi.alias_target(client, collection) is None:
        raise MRLError(f"{where} does not exist at {uri}")
    fields = {f["name"]: f for f in client.describe_collection(collection)["fields"]}
    wanted = {"adapt.id_field": cfg.id_field, "adapt.vector_field": cfg.vector_field}
    if cfg.label_field:
        wanted["adapt.label_field"] = cfg.label_field
    for key, name in wanted.items():
        if name not in fields:
            raise MRLError(f"{key}: {where} has no field {name!r} (its fields: {', '.join(fields)})")
    kind = getattr(fields[cfg.vector_field]["type"], "name", str(fields[cfg.vector_field]["type"]))
    if kind not in VECTOR_TYPES:
        raise MRLError(f"adapt.vector_field: {where}'s field {cfg.vector_field!r} is {kind}, not a float vector")
    client.load_collection(collection)
    ids, rows, labels = [], [], []
    output = list(wanted.values())
    bar = progress(None, f"reading {collection}", "vector", total=mi.row_count(client, collection))
    iterator = client.query_iterator(collection, batch_size=8_000, filter="", output_fields=output)
    try:
        while page := iterator.next():
            ids += [str(r[cfg.id_field]) for r in page]
            rows += [r[cfg.vector_field] for r in page]
            if cfg.label_field:
                labels += [str(r[cfg.label_field]) for r in page]
            bar.update(len(page))
    finally:
        iterator.close()
        bar.close()
    x = _matrix(rows, where, cfg.vector_field)
    if log:
        log(f"read {len(ids):,} vectors of {x.shape[1] if len(ids) else 0} dims from {where}")
    labels_array = np.asarray(labels, dtype=str) if cfg.label_field else None
    return checked(Vectors(np.asarray(ids, dtype=str), x, labels_array, f"milvus:{uri}#{collection}", collection),
                   where)


def read_file(path: str | Path, cfg: AdaptConfig) -> Vectors:
    """Vectors from Parquet (columns adapt.id_field, adapt.vector_field: list<float>, optional adapt.label_field),
    .npz (arrays of those names) or .npy (an (N, D) array; ids are the row numbers)."""
    path = Path(path)
    if not path.is_file():
        raise MRLError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = _load(path, lambda: np.load(path, allow_pickle=False))
        if x.ndim != 2:
            raise MRLError(f"{path}: expected an (N, D) array of vectors, got shape {list(x.shape)}")
        ids, labels = np.arange(len(x)).astype(str), None
    elif suffix == ".npz":
        with _load(path, lambda: np.load(path, allow_pickle=False)) as z:
            columns = _columns(path, cfg, list(z.files))
            ids, x = z[columns["id"]].astype(str), z[columns["vector"]]
            labels = z[columns["label"]].astype(str) if "label" in columns else None
        if x.ndim != 2:
            raise MRLError(f"{path}: adapt.vector_field: {cfg.vector_field!r} has shape {list(x.shape)}, not (N, D)")
    elif suffix == ".parquet":
        table = _load(path, lambda: pq.read_table(path))
        columns = _columns(path, cfg, table.column_names)
        ids = np.asarray(table[columns["id"]].to_pylist(), dtype=str)
        x = _parquet_vectors(table[columns["vector"]], path, cfg.vector_field)
        labels = np.asarray(table[columns["label"]].to_pylist(), dtype=str) if "label" in columns else None
    else:
        raise MRLError(f"{path}: expected a .parquet, .npz or .npy file of vectors")
    if len(ids) != len(x):
        raise MRLError(f"{path}: {len(ids):,} ids for {len(x):,} vectors")
    return checked(Vectors(ids, np.asarray(x, dtype=np.float32), labels, str(path), path.stem), str(path))


def _load(path: Path, read):
    try:
        return read()
    except (OSError, ValueError, pa.ArrowException) as e:
        raise MRLError(f"{path}: not a readable vectors file ({type(e).__name__})") from None


def _columns(path: Path, cfg: AdaptConfig, have: list[str]) -> dict[str, str]:
    wanted = {"id": ("adapt.id_field", cfg.id_field), "vector": ("adapt.vector_field", cfg.vector_field)}
    if cfg.label_field:
        wanted["label"] = ("adapt.label_field", cfg.label_field)
    for key, name in wanted.values():
        if name not in have:
            raise MRLError(f"{key}: {path} has no column {name!r} (it has: {', '.join(have)})")
    return {role: name for role, (_, name) in wanted.items()}


def _parquet_vectors(column: pa.ChunkedArray, path: Path, field: str) -> np.ndarray:
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise MRLError(f"{path}: adapt.vector_field: column {field!r} is {column.type}, not a list of floats")
    return _matrix(column.to_pylist(), str(path), field)


def read_source(cfg: AdaptConfig, collection: str | None, path: str | Path | None, milvus_uri: str | None,
                log: Callable[[str], None] | None = None) -> Vectors:
    """The vectors to adapt: exactly one of a Milvus collection (at `milvus_uri`) or a vectors file."""
    if (collection is None) == (path is None):
        raise MRLError("adapt: give exactly one of --collection or --vectors")
    if path is not None:
        return read_file(path, cfg)
    client = mi.connect(milvus_uri)
    try:
        return read_collection(client, collection, cfg, mi.resolve_milvus_uri(milvus_uri), log)
    finally:
        client.close()

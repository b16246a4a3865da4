"""Reading a window of current embeddings: the service's query log, a .npy array, a dataset artifact (images
embedded by the reference's model), a text dataset's queries, or a Parquet embeddings table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mrl.config import IngestConfig
from mrl.data.artifact import load_dataset
from mrl.data.readers import read_embeddings_table
from mrl.errors import MRLError
from mrl.text.artifact import is_text_dataset, load_text_dataset


def read_window(path: str | Path, split: str | None = None,
                embed: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (and class names, where the source has labels) of a current window.

    `path` is the service's query-log directory (queries-*.npy), a .npy array, a dataset artifact (.npz; images
    are embedded with `embed`) or a Parquet embeddings table.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("queries-*.npy"))
        if not files:
            raise MRLError(f"{path}: the window is empty (no queries-*.npy files)")
        return np.concatenate([_read_npy(f) for f in files]), None
    if not path.exists():
        raise MRLError(f"{path}: file not found")
    if path.suffix == ".npy":
        return _read_npy(path), None
    if path.suffix == ".parquet":
        ds = read_embeddings_table(path, IngestConfig(source="embeddings"))
    else:  # a dataset artifact: .npz, or no suffix as pipeline artifacts have
        if is_text_dataset(path):  # the window is the dataset's queries (what the service logs), not its documents
            return _text_queries(load_text_dataset(path), path, split, embed), None
        ds = load_dataset(path)
    if split is not None:
        if split not in set(ds.split.tolist()):
            raise MRLError(f"{path}: no items in split {split!r}")
        ds = ds.subset(split)
    if ds.kind == "embeddings":
        x = ds.x.astype(np.float32)
    elif embed is None:
        raise MRLError(f"{path}: {ds.kind} items need a model to embed them")
    else:
        x = embed(ds.x)
    # Class names, not indices: the window's class list need not be the reference's.
    labels = np.asarray(ds.classes)[ds.labels].astype(str) if (ds.labels >= 0).all() else None
    return x, labels


def _text_queries(td, path: Path, split: str | None, embed: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """A text dataset's queries (of `split`) through the adapter: the base embeddings are the adapter's inputs."""
    rows = np.arange(len(td.query_x)) if split is None else np.flatnonzero(td.query_split == split)
    if not len(rows):
        raise MRLError(f"{path}: no queries in split {split!r}")
    if embed is None:
        raise MRLError(f"{path}: text queries need the adapter to embed them")
    return embed(td.query_x[rows])


def _read_npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise MRLError(f"{path}: not a .npy array ({e})") from None
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise MRLError(f"{path}: expected a 2-D numeric array of embeddings, got shape {x.shape} {x.dtype}")
    return x.astype(np.float32)

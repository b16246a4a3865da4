"""The dataset artifact every stage reads: one .npz file holding items, ids, labels and split.

kind "images": x is uint8 of shape (N, C, H, W). kind "vectors": x is float32 of shape (N, D).
Labels are class indices into `classes`, or -1 for unlabeled items.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrl.errors import MRLError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    kind: str  # "images" or "vectors"
    x: np.ndarray
    ids: np.ndarray  # str, unique
    labels: np.ndarray  # int64, -1 = unlabeled
    split: np.ndarray  # str, "train" or "test"
    classes: np.ndarray  # str, class names indexed by label
    skipped: list[str] = field(default_factory=list)  # "path: reason" of input files left out (on_bad_file: skip)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, split: str) -> Dataset:
        mask = self.split == split
        return Dataset(self.kind, self.x[mask], self.ids[mask], self.labels[mask], self.split[mask], self.classes)

    def head(self, n: int) -> Dataset:
        return Dataset(self.kind, self.x[:n], self.ids[:n], self.labels[:n], self.split[:n], self.classes)

    @property
    def has_labels(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


def check_dataset(ds: Dataset, source: str) -> None:
    """Invariants every artifact satisfies; violations name the source."""
    n = len(ds.x)
    if n == 0:
        raise MRLError(f"{source}: no items")
    for name in ("ids", "labels", "split"):
        if len(getattr(ds, name)) != n:
            raise MRLError(f"{source}: {len(getattr(ds, name))} {name} for {n} items")
    if ds.kind not in ("images", "vectors"):
        raise MRLError(f"{source}: unknown dataset kind {ds.kind!r}")
    if len(np.unique(ds.ids)) != n:
        raise MRLError(f"{source}: item ids are not unique")
    bad_split = {str(v) for v in np.unique(ds.split)} - set(SPLITS)
    if bad_split:
        raise MRLError(f"{source}: unknown split values {sorted(bad_split)} (expected train/test)")
    if ds.kind == "vectors" and not np.isfinite(ds.x).all():
        raise MRLError(f"{source}: vectors contain NaN or inf")
    if ((ds.labels < -1) | (ds.labels >= len(ds.classes))).any():
        raise MRLError(f"{source}: labels outside 0..{len(ds.classes) - 1}")


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_dataset(ds: Dataset, path: str | Path) -> Path:
    path = Path(path)
    check_dataset(ds, str(path))
    arrays = dict(
        kind=np.array(ds.kind), x=ds.x, ids=ds.ids.astype(str), labels=ds.labels.astype(np.int64),
        split=ds.split.astype(str), classes=ds.classes.astype(str), skipped=np.array(ds.skipped, dtype=str),
    )
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return path


def load_dataset(path: str | Path, check: bool = True) -> Dataset:
    """Load an artifact; check=False skips the invariants (for the validation stage, which reports them)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            skipped = [str(s) for s in z["skipped"]] if "skipped" in z.files else []
            ds = Dataset(str(z["kind"]), z["x"], z["ids"], z["labels"], z["split"], z["classes"], skipped)
    except FileNotFoundError:
        raise MRLError(f"{path}: dataset file not found") from None
    except (OSError, ValueError, KeyError) as e:
        raise MRLError(f"{path}: not a dataset artifact ({e})") from None
    if check:
        check_dataset(ds, str(path))
    return ds

"""The drift reference: what promotion saves for drift checks of one served collection, and its file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrl.config import Config
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError

FORMAT = "mrl-drift-reference/1"


@dataclass
class Reference:
    """What promotion saves for drift checks of one served collection."""

    embeddings: np.ndarray  # (rows, full_dim) float32: first `compare_rows` are compared, the rest calibrate
    compare_rows: int
    labels: np.ndarray  # class index per row, -1 where unknown
    class_names: list[str]
    centroids: np.ndarray | None  # (classes, full_dim) unit class means: predicted classes of unlabelled windows
    prefixes: list[int]
    method: str
    pca_components: int
    window_size: int  # the window size the thresholds were calibrated for
    thresholds: dict[str, float]  # "d<dim>", "class_share/labels", "class_share/predicted"
    meta: dict[str, Any] = field(default_factory=dict)  # model name/version/uri, collection, created

    @property
    def full_dim(self) -> int:
        return self.embeddings.shape[1]

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        return self.embeddings[: self.compare_rows], self.embeddings[self.compare_rows:]


def save_reference(ref: Reference, path: str | Path) -> Path:
    header = {k: v for k, v in asdict(ref).items() if k not in ("embeddings", "labels", "centroids")}
    arrays = {"embeddings": ref.embeddings, "labels": ref.labels}
    if ref.centroids is not None:
        arrays["centroids"] = ref.centroids
    path = Path(path)
    atomic_write(path, lambda f: np.savez(f, header=json.dumps({"format": FORMAT, **header}), **arrays))
    return path


def load_reference(path: str | Path) -> Reference:
    path = Path(path)
    if not path.is_file():
        raise MRLError(f"{path}: drift reference not found (it is written when an index is promoted: mrl index promote)")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: z[k] for k in ("embeddings", "labels")}
            centroids = z["centroids"] if "centroids" in z.files else None
    except (OSError, ValueError, KeyError) as e:
        raise MRLError(f"{path}: not a drift reference ({e})") from None
    if header.pop("format", None) != FORMAT:
        raise MRLError(f"{path}: not a drift reference (format is not {FORMAT})")
    return Reference(centroids=centroids, **arrays, **header)


def reference_path(cfg: Config, collection: str) -> Path:
    return Path(cfg.drift.reference_dir) / f"{collection}.npz"

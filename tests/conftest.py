"""Tiny, learnable fixtures written in the real input formats (idx.gz, image folders, Parquet)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

NUM_CLASSES = 10  # as many as Fashion-MNIST declares, so class-balance checks see every class


def synthetic_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Class c is a bright 5x5 square in cell c of a 3x4 grid on a noisy background: easy, but needs learning."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = (c // 4) * (size // 3) + 2, (c % 4) * (size // 4) + 1
        images[i, r:r + 5, q:q + 5] = rng.integers(180, 255)
    return images, labels


def write_idx(path: Path, array: np.ndarray, magic_ndim: int | None = None) -> Path:
    ndim = array.ndim if magic_ndim is None else magic_ndim
    header = struct.pack(">HBB", 0, 0x08, ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    """The four Fashion-MNIST idx.gz files, 240 train and 80 test items."""
    d = tmp_path / "fmnist"
    d.mkdir()
    for prefix, n, seed in (("train", 240, 0), ("t10k", 80, 1)):
        images, labels = synthetic_images(n, seed)
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return d


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    images, labels = synthetic_images(40, 2, size=32)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def write_embeddings_table(path: Path, vectors: list, ids=None, labels=None, splits=None) -> Path:
    n = len(vectors)
    columns = {"id": ids if ids is not None else [f"item-{i}" for i in range(n)], "embedding": vectors}
    if labels is not None:
        columns["label"] = labels
    if splits is not None:
        columns["split"] = splits
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def embeddings_table(tmp_path: Path) -> Path:
    """200 labeled 24-dim vectors in 4 classes: class means apart, so an adapter can learn them."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 200)
    means = rng.normal(0, 2, (4, 24))
    vectors = (means[labels] + rng.normal(0, 1, (200, 24))).astype(np.float32)
    return write_embeddings_table(
        tmp_path / "emb.parquet", [v.tolist() for v in vectors], labels=[f"c{c}" for c in labels],
        splits=["test" if i % 5 == 0 else "train" for i in range(200)],
    )

"""Readers for the three input formats. Each returns a checked Dataset or raises a one-line MRLError
naming the file and the problem; none of them writes anything."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from mrl.config import IngestConfig
from mrl.data.artifact import SPLITS, Dataset, check_dataset
from mrl.data.images import model_pixels
from mrl.errors import MRLError

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {  # split -> (images, labels), without the optional .gz suffix
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_UBYTE = 0x08  # the only idx element type Fashion-MNIST uses
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# --- idx (Fashion-MNIST / MNIST) ----------------------------------------------------------------

def read_idx(path: str | Path, expected_ndim: int) -> np.ndarray:
    """Read an idx file (optionally gzipped) of unsigned bytes with `expected_ndim` dimensions."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise MRLError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise MRLError(f"{path}: cannot decompress ({e})") from None
    if len(raw) < 4:
        raise MRLError(f"{path}: truncated file ({len(raw)} bytes, no idx header)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != IDX_UBYTE or ndim != expected_ndim:
        magic = int.from_bytes(raw[:4], "big")
        raise MRLError(
            f"{path}: bad magic number {magic:#010x} "
            f"(expected {(IDX_UBYTE << 8) | expected_ndim:#010x}: unsigned bytes, {expected_ndim} dims)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MRLError(f"{path}: truncated file (header cut short)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise MRLError(
            f"{path}: truncated file ({len(raw) - header} data bytes, header promises {expected} for shape {shape})"
            if len(raw) - header < expected
            else f"{path}: {len(raw) - header - expected} unexpected bytes after the data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise MRLError(f"{directory / stem}[.gz]: file not found (need the four Fashion-MNIST idx files here)")


def read_fashion_mnist(directory: str | Path) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise MRLError(f"{directory}: directory not found (expected the four Fashion-MNIST idx files)")
    parts = []
    for split, (image_stem, label_stem) in FASHION_MNIST_FILES.items():
        image_path, label_path = _find_idx(directory, image_stem), _find_idx(directory, label_stem)
        images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
        if len(images) != len(labels):
            raise MRLError(f"{image_path}: {len(images)} images but {label_path.name} has {len(labels)} labels")
        if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise MRLError(f"{label_path}: label {labels.max()} outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
        ids = np.array([f"fmnist-{split}-{i:05d}" for i in range(len(images))])
        parts.append((images[:, None], labels.astype(np.int64), ids, np.full(len(images), split)))
    x, labels, ids, split = (np.concatenate(p) for p in zip(*parts))
    ds = Dataset("images", x, ids, labels, split, np.array(FASHION_MNIST_CLASSES))
    check_dataset(ds, str(directory))
    return ds


# --- image folder -------------------------------------------------------------------------------

def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _load_image(path: Path, cfg: IngestConfig) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, naming it, not later
            return model_pixels(img, 1 if cfg.grayscale else 3, cfg.image_size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MRLError(f"{path}: unreadable image ({e.__class__.__name__})") from None


def read_image_folder(root: str | Path, cfg: IngestConfig) -> Dataset:
    """root/<class>/<image> (split at random by cfg.test_fraction) or root/{train,test}/<class>/<image>."""
    root = Path(root)
    if not root.is_dir():
        raise MRLError(f"{root}: directory not found")
    has_splits = {p.name for p in _class_folders(root)} >= set(SPLITS)
    split_roots = {s: root / s for s in SPLITS} if has_splits else {None: root}
    classes = sorted({c.name for r in split_roots.values() for c in _class_folders(r)})
    if not classes:
        raise MRLError(f"{root}: empty folder (expected one subfolder of images per class)")
    images, labels, ids, splits, skipped = [], [], [], [], []
    for split, split_root in split_roots.items():
        for label, name in enumerate(classes):
            folder = split_root / name
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
            if not files and split != "test":
                raise MRLError(f"{folder}: empty folder (no images with suffix {sorted(IMAGE_SUFFIXES)})")
            for f in files:
                try:
                    images.append(_load_image(f, cfg))
                except MRLError as e:
                    if cfg.on_bad_file == "fail":
                        raise MRLError(f"{e} (ingest.on_bad_file: skip leaves such files out)") from None
                    skipped.append(str(e))
                    continue
                labels.append(label)
                ids.append(str(f.relative_to(root)))
                splits.append(split)
    if not images:
        raise MRLError(f"{root}: no readable images ({len(skipped)} skipped, first: {skipped[0]})")
    split = np.array(splits, dtype=object)
    if not has_splits:
        rng = np.random.default_rng(cfg.split_seed)
        split = np.where(rng.random(len(split)) < cfg.test_fraction, "test", "train")
    ds = Dataset("images", np.stack(images), np.array(ids), np.array(labels, dtype=np.int64),
                 split.astype(str), np.array(classes), skipped=skipped)
    check_dataset(ds, str(root))
    return ds


# --- embeddings table ---------------------------------------------------------------------------

def _column(table: pa.Table, name: str, path: Path, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise MRLError(f"{path}: missing {what} column {name!r} (columns: {table.column_names})")
    return table.column(name)


def read_embeddings_table(path: str | Path, cfg: IngestConfig) -> Dataset:
    """A Parquet table with an id column, an optional label and split column and one list<float> column."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise MRLError(f"{path}: file not found") from None
    except (pa.ArrowException, OSError) as e:
        raise MRLError(f"{path}: not a readable Parquet file ({e})") from None
    if table.num_rows == 0:
        raise MRLError(f"{path}: table has no rows")
    ids = _column(table, cfg.id_column, path, "id")
    vectors = _column(table, cfg.vector_column, path, "vector")
    if not pa.types.is_list(vectors.type) and not pa.types.is_large_list(vectors.type) \
            and not pa.types.is_fixed_size_list(vectors.type):
        raise MRLError(f"{path}: column {cfg.vector_column!r} is {vectors.type}, expected a list of floats")
    if ids.null_count or vectors.null_count:
        raise MRLError(f"{path}: null values in column {cfg.id_column!r} or {cfg.vector_column!r}")
    lengths = pc.list_value_length(vectors).to_numpy()
    if lengths.min() != lengths.max():
        raise MRLError(f"{path}: column {cfg.vector_column!r} has vectors of mixed length "
                       f"({lengths.min()} to {lengths.max()})")
    if lengths[0] == 0:
        raise MRLError(f"{path}: column {cfg.vector_column!r} holds empty vectors")
    flat = pc.list_flatten(vectors).to_numpy(zero_copy_only=False)
    x = np.asarray(flat, dtype=np.float32).reshape(table.num_rows, int(lengths[0]))
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad_rows):
        raise MRLError(f"{path}: column {cfg.vector_column!r} has NaN or inf in {len(bad_rows)} rows "
                       f"(first: row {bad_rows[0]})")
    id_values = np.array([str(v) for v in ids.to_pylist()])
    if len(np.unique(id_values)) != len(id_values):
        raise MRLError(f"{path}: column {cfg.id_column!r} has duplicate ids")

    labels, classes = np.full(table.num_rows, -1, dtype=np.int64), np.array([], dtype=str)
    if cfg.label_column and cfg.label_column in table.column_names:
        raw = table.column(cfg.label_column).to_pylist()
        classes = np.array(sorted({str(v) for v in raw if v is not None}))
        index = {name: i for i, name in enumerate(classes)}
        labels = np.array([-1 if v is None else index[str(v)] for v in raw], dtype=np.int64)

    if cfg.split_column and cfg.split_column in table.column_names:
        split = np.array([str(v) for v in table.column(cfg.split_column).to_pylist()])
        bad = sorted({str(v) for v in split} - set(SPLITS))
        if bad:
            raise MRLError(f"{path}: column {cfg.split_column!r} has values {bad[:3]} (expected train/test)")
    else:
        rng = np.random.default_rng(cfg.split_seed)
        split = np.where(rng.random(table.num_rows) < cfg.test_fraction, "test", "train")
    ds = Dataset("vectors", x, id_values, labels, split, classes)
    check_dataset(ds, str(path))
    return ds

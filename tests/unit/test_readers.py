"""Data readers: the good path and every corrupt case, each a one-line error naming the file, nothing written."""

import gzip

import numpy as np
import pytest
from helpers import synthetic_images, write_embeddings_table, write_idx
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import IngestConfig
from mrl.data import load_dataset
from mrl.errors import MRLError
from mrl.ingest import ingest

CFG = IngestConfig()


def ingest_fails(source, input_path, tmp_path, match: str) -> None:
    out = tmp_path / "out" / "ds.npz"
    with pytest.raises(MRLError) as err:
        ingest(source, input_path, out, CFG)
    assert match in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and not out.parent.exists(), "bad input must write nothing"


# --- Fashion-MNIST idx -------------------------------------------------------------------------

def test_fashion_mnist_good_path(fmnist_dir, tmp_path):
    r = ingest("fashion_mnist", fmnist_dir, tmp_path / "ds.npz", CFG)
    assert (r.n_train, r.n_test, r.item_shape, len(r.classes)) == (240, 80, (1, 28, 28), 10)
    ds = load_dataset(r.path)
    images, labels = synthetic_images(240, 0)
    train = ds.subset("train")
    np.testing.assert_array_equal(train.x[:, 0], images)
    np.testing.assert_array_equal(train.labels, labels)
    assert ds.ids[0] == "fmnist-train-00000" and len(set(ds.ids)) == 320


def test_fashion_mnist_uncompressed_files(fmnist_dir, tmp_path):
    for gz in fmnist_dir.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert ingest("fashion_mnist", fmnist_dir, tmp_path / "ds.npz", CFG).n_train == 240


def test_bad_magic_number(fmnist_dir, tmp_path):
    path = fmnist_dir / "train-images-idx3-ubyte.gz"
    write_idx(path, synthetic_images(240, 0)[0], magic_ndim=2)
    ingest_fails("fashion_mnist", fmnist_dir, tmp_path, f"{path}: bad magic number 0x00000802")


def test_truncated_file(fmnist_dir, tmp_path):
    path = fmnist_dir / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    ingest_fails("fashion_mnist", fmnist_dir, tmp_path, f"{path}: truncated file")


def test_truncated_gzip_stream(fmnist_dir, tmp_path):
    path = fmnist_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    ingest_fails("fashion_mnist", fmnist_dir, tmp_path, f"{path}: cannot decompress")


def test_image_label_count_mismatch(fmnist_dir, tmp_path):
    write_idx(fmnist_dir / "train-labels-idx1-ubyte.gz", synthetic_images(239, 0)[1])
    ingest_fails("fashion_mnist", fmnist_dir, tmp_path, "240 images but train-labels-idx1-ubyte.gz has 239 labels")


def test_missing_file(fmnist_dir, tmp_path):
    (fmnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    ingest_fails("fashion_mnist", fmnist_dir, tmp_path, "t10k-labels-idx1-ubyte[.gz]: file not found")


def test_missing_directory(tmp_path):
    ingest_fails("fashion_mnist", tmp_path / "nowhere", tmp_path, "nowhere: directory not found")


def test_bad_input_leaves_existing_output_untouched(fmnist_dir, tmp_path):
    out = tmp_path / "ds.npz"
    ingest("fashion_mnist", fmnist_dir, out, CFG)
    before = out.read_bytes()
    (fmnist_dir / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(MRLError):
        ingest("fashion_mnist", fmnist_dir, out, CFG)
    assert out.read_bytes() == before


def test_cli_error_is_one_line_and_non_zero(fmnist_dir, tmp_path):
    (fmnist_dir / "train-images-idx3-ubyte.gz").write_bytes(b"\x00\x00")
    out = tmp_path / "ds.npz"
    result = CliRunner().invoke(app, ["ingest", "--input", str(fmnist_dir), "--output", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "train-images-idx3-ubyte.gz" in result.output
    assert not out.exists()


# --- image folder ------------------------------------------------------------------------------

def test_image_folder_good_path(image_folder, tmp_path):
    r = ingest("image_folder", image_folder, tmp_path / "ds.npz", CFG)
    assert r.item_shape == (1, 28, 28) and r.n_train + r.n_test == 40
    assert r.classes == sorted(p.name for p in image_folder.iterdir())
    ds = load_dataset(r.path)
    assert ds.ids[0].startswith("class_") and ds.x.dtype == np.uint8


def test_image_folder_with_split_subfolders_and_rgb(image_folder, tmp_path):
    root = tmp_path / "split_root"
    for split in ("train", "test"):
        for cls in image_folder.iterdir():
            (root / split / cls.name).mkdir(parents=True)
    for i, f in enumerate(sorted(image_folder.glob("*/*.png"))):
        f.rename(root / ("test" if i % 4 == 0 else "train") / f.parent.name / f.name)
    cfg = IngestConfig(grayscale=False, image_size=16)
    r = ingest("image_folder", root, tmp_path / "ds.npz", cfg)
    assert (r.n_train, r.n_test, r.item_shape) == (30, 10, (3, 16, 16))


def test_empty_image_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    ingest_fails("image_folder", tmp_path / "empty", tmp_path, "empty: empty folder")


def test_class_folder_without_images(image_folder, tmp_path):
    (image_folder / "class_x").mkdir()
    ingest_fails("image_folder", image_folder, tmp_path, "class_x: empty folder")


def test_unreadable_image(image_folder, tmp_path):
    bad = image_folder / "class_0" / "zzz.png"
    bad.write_bytes(b"not a png")
    ingest_fails("image_folder", image_folder, tmp_path, f"{bad}: unreadable image")


# --- embeddings table ---------------------------------------------------------------------------

def test_embeddings_table_good_path(embeddings_table, tmp_path):
    r = ingest("embeddings", embeddings_table, tmp_path / "ds.npz", CFG)
    assert (r.kind, r.item_shape, r.n_train, r.n_test) == ("vectors", (24,), 160, 40)
    assert r.classes == ["c0", "c1", "c2", "c3"]


def test_unlabeled_table_gets_random_split(tmp_path):
    path = write_embeddings_table(tmp_path / "t.parquet", [[float(i), 1.0] for i in range(50)])
    ds = load_dataset(ingest("embeddings", path, tmp_path / "ds.npz", CFG).path)
    assert (ds.labels == -1).all() and set(ds.split) == {"train", "test"}


@pytest.mark.parametrize(
    "vectors, ids, match",
    [
        ([[1.0, 2.0], [1.0]], None, "vectors of mixed length (1 to 2)"),
        ([[1.0, float("nan")], [1.0, 2.0]], None, "NaN or inf in 1 rows (first: row 0)"),
        ([[1.0, 2.0], [float("inf"), 2.0]], None, "NaN or inf in 1 rows (first: row 1)"),
        ([[1.0, 2.0], [3.0, 4.0]], ["a", "a"], "duplicate ids"),
        ([[], []], None, "empty vectors"),
    ],
)
def test_corrupt_embeddings_table(tmp_path, vectors, ids, match):
    path = write_embeddings_table(tmp_path / "t.parquet", vectors, ids=ids)
    ingest_fails("embeddings", path, tmp_path, match)


def test_missing_vector_column(tmp_path):
    path = write_embeddings_table(tmp_path / "t.parquet", [[1.0], [2.0]])
    with pytest.raises(MRLError, match="missing vector column 'vec'"):
        ingest("embeddings", path, tmp_path / "ds.npz", IngestConfig(vector_column="vec"))


def test_not_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("id,embedding\n")
    ingest_fails("embeddings", path, tmp_path, f"{path}: not a readable Parquet file")


def test_bad_split_values(tmp_path):
    path = write_embeddings_table(tmp_path / "t.parquet", [[1.0], [2.0]], splits=["train", "val"])
    ingest_fails("embeddings", path, tmp_path, "has values ['val'] (expected train/test)")

"""Great Expectations suites: pass on good data, fail closed on each kind of bad data."""

import json

import numpy as np
import pytest
from helpers import write_embeddings_table

from mrl.config import IngestConfig, ValidationConfig
from mrl.data import Dataset, load_dataset
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.ingest import ingest
from mrl.validate import validate_dataset, validate_embeddings_table

CFG = ValidationConfig(min_train_items=100, min_test_items=20, min_class_share=0.02, max_class_share=0.5)


@pytest.fixture
def dataset(fmnist_dir, tmp_path):
    return ingest("fashion_mnist", fmnist_dir, tmp_path / "ds.npz", IngestConfig()).path


def write_raw(ds: Dataset, path):
    """Write an artifact *without* the reader's checks: what a buggy upstream step could produce."""
    arrays = {"kind": np.array(ds.kind), "x": ds.x, "ids": ds.ids, "labels": ds.labels, "split": ds.split,
              "classes": ds.classes}
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def corrupt(dataset, tmp_path, **changes):
    ds = load_dataset(dataset)
    fields = {name: getattr(ds, name).copy() for name in ("x", "ids", "labels", "split", "classes")} | changes
    return write_raw(Dataset(ds.kind, **fields), tmp_path / "bad.npz")


def fails(path, match, tmp_path, cfg=CFG):
    out = tmp_path / "result.json"
    with pytest.raises(MRLError) as err:
        validate_dataset(path, cfg, out)
    assert match in str(err.value) and "\n" not in str(err.value)
    saved = json.loads(out.read_text())  # the full result is kept even though the step failed
    assert saved["success"] is False and saved["results"]


def test_good_dataset_passes_and_writes_the_result(dataset, tmp_path):
    report = validate_dataset(dataset, CFG, tmp_path / "result.json")
    assert report.success and report.evaluated >= 9
    assert json.loads((tmp_path / "result.json").read_text())["success"] is True


def test_duplicated_id(dataset, tmp_path):
    ids = load_dataset(dataset).ids.copy()
    ids[5] = ids[4]
    fails(corrupt(dataset, tmp_path, ids=ids), "items.expect_column_values_to_be_unique(id): 2 unexpected", tmp_path)


def test_unknown_label(dataset, tmp_path):
    labels = load_dataset(dataset).labels.copy()
    labels[:3] = 42
    fails(corrupt(dataset, tmp_path, labels=labels), "items.expect_column_values_to_be_in_set(label): 3 unexpected",
          tmp_path)


def test_unknown_split(dataset, tmp_path):
    split = load_dataset(dataset).split.astype(object)
    split[0] = "valid"
    fails(corrupt(dataset, tmp_path, split=split.astype(str)), "expect_column_values_to_be_in_set(split)", tmp_path)


def test_class_imbalance_and_small_splits(dataset, tmp_path):
    fails(dataset, "class_shares.expect_column_values_to_be_between(share)", tmp_path,
          ValidationConfig(min_class_share=0.3))
    fails(dataset, "splits.expect_column_values_to_be_between(test_items)", tmp_path,
          ValidationConfig(min_test_items=1000))


def test_declared_classes(dataset, tmp_path):
    with pytest.raises(MRLError, match="differ from validation.expected_classes"):
        validate_dataset(dataset, ValidationConfig(expected_classes=["cat", "dog"]))


def test_nan_vectors_in_a_vector_dataset(embeddings_table, tmp_path):
    vectors = ingest("embeddings", embeddings_table, tmp_path / "vec.npz", IngestConfig()).path
    x = load_dataset(vectors).x.copy()
    x[7, 3] = np.nan
    fails(corrupt(vectors, tmp_path, x=x), "items.expect_column_values_to_be_in_set(finite): 1 unexpected", tmp_path)


def table(tmp_path, vectors, ids=None, labels=None):
    return write_embeddings_table(tmp_path / "emb.parquet", vectors, ids=ids, labels=labels)


def table_fails(path, match, dim=3, cfg=CFG):
    with pytest.raises(MRLError) as err:
        validate_embeddings_table(path, cfg, dim)
    assert match in str(err.value)


def test_embeddings_table_suite(tmp_path):
    good = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    assert validate_embeddings_table(table(tmp_path, good), CFG, 3).success
    table_fails(table(tmp_path, good), "rows.expect_column_values_to_be_in_set(dim): 3 unexpected", dim=4)
    table_fails(table(tmp_path, [*good[:2], [1.0, 2.0]]), "(dim): 1 unexpected")
    table_fails(table(tmp_path, [*good[:2], [float("nan"), 0.0, 1.0]]), "(finite): 1 unexpected")
    table_fails(table(tmp_path, good, ids=["a", "b", "a"]), "expect_column_values_to_be_unique(id): 2 unexpected")
    table_fails(table(tmp_path, [*good[:2], [1e6, 0.0, 0.0]]), "expect_column_values_to_be_between(norm)")
    labeled = table(tmp_path, good, labels=["cat", "dog", "emu"])
    table_fails(labeled, "expect_column_values_to_be_in_set(label): 1 unexpected",
                cfg=ValidationConfig(expected_classes=["cat", "dog"]))

"""The Great Expectations suite of text datasets (`mrl validate --data text.npz`): a good one passes; empty texts,
duplicate ids, pairs that resolve to nothing and too few held-out queries each fail, named, with exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import ValidationConfig
from mrl.data import Dataset
from mrl.errors import MRLError
from mrl.text.artifact import TextDataset, save_text_dataset
from mrl.validate import validate_dataset

CFG = ValidationConfig(min_train_items=10, min_test_items=4)


def text_dataset(path: Path, n: int = 20, dim: int = 8) -> Path:
    """n documents, one query each (every fifth held out), unit vectors."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    documents = Dataset("vectors", x[:n], np.array([f"d{i}" for i in range(n)]), np.full(n, -1), np.full(n, "train"),
                        np.array([], str))
    split = np.where(np.arange(n) % 5 == 0, "test", "train")
    td = TextDataset(documents, np.array([f"document {i}" for i in range(n)]), np.array([f"q{i}" for i in range(n)]),
                     np.array([f"query {i}" for i in range(n)]), x[n:], split, np.arange(n), np.arange(n), "m", "k")
    return save_text_dataset(td, path)


def broken(path: Path, out: Path, **changes) -> Path:
    """The text dataset at `path` with some arrays replaced, written as is (the writer's own checks would refuse it)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(out, **(arrays | changes))
    return out


def test_a_good_text_dataset_passes_through_the_cli(tmp_path):
    data = text_dataset(tmp_path / "text.npz")
    report = validate_dataset(data, CFG, tmp_path / "result.json")
    assert report.success and report.evaluated == 17 and report.result_path.is_file()
    result = CliRunner().invoke(app, ["validate", "--data", str(data), "--set", "validation.min_train_items=10",
                                      "--set", "validation.min_test_items=4"])
    assert result.exit_code == 0 and result.output.startswith("validation passed: 17 expectations")


@pytest.mark.parametrize("changes, failed", [
    (lambda a: {"text_documents": np.where(np.arange(20) == 3, "  ", a["text_documents"])},
     "documents.expect_column_values_to_be_between(text_chars): 1 unexpected"),
    (lambda a: {"query_texts": np.where(np.arange(20) < 2, "", a["query_texts"])},
     "queries.expect_column_values_to_be_between(text_chars): 2 unexpected"),
    (lambda a: {"ids": np.where(np.arange(20) == 1, "d0", a["ids"])},
     "documents.expect_column_values_to_be_unique(id): 2 unexpected"),
    (lambda a: {"query_ids": np.where(np.arange(20) == 1, "q0", a["query_ids"])},
     "queries.expect_column_values_to_be_unique(id): 2 unexpected"),
    (lambda a: {"pair_doc": np.where(np.arange(20) == 7, 99, a["pair_doc"])},
     "pairs.expect_column_values_to_be_in_set(document_found): 1 unexpected"),
    (lambda a: {"pair_query": np.where(np.arange(20) == 7, -1, a["pair_query"])},
     "pairs.expect_column_values_to_be_in_set(query_found): 1 unexpected"),
    (lambda a: {"query_split": np.full(20, "train")},
     "counts.expect_column_values_to_be_between(test_queries)"),
    (lambda a: {"query_x": np.where(np.arange(20)[:, None] == 5, np.nan, a["query_x"]).astype(np.float32)},
     "queries.expect_column_values_to_be_in_set(finite): 1 unexpected"),
], ids=["blank document", "empty queries", "duplicate document id", "duplicate query id", "pair to no document",
        "pair from no query", "no held-out query", "NaN query vector"])
def test_each_fault_fails_its_expectation(tmp_path, changes, failed):
    good = text_dataset(tmp_path / "text.npz")
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    bad = broken(good, tmp_path / "bad.npz", **changes(arrays))
    with pytest.raises(MRLError, match="expectations failed") as e:
        validate_dataset(bad, CFG)
    assert str(e.value).startswith(f"{bad}: ") and failed in str(e.value), str(e.value)
    result = CliRunner().invoke(app, ["validate", "--data", str(bad), "--set", "validation.min_train_items=10",
                                      "--set", "validation.min_test_items=4"])
    assert result.exit_code == 2 and failed in result.output


def test_arrays_of_mismatched_lengths_are_one_line(tmp_path):
    good = text_dataset(tmp_path / "text.npz")
    with np.load(good, allow_pickle=False) as z:
        texts = z["query_texts"][:-1]
    bad = broken(good, tmp_path / "bad.npz", query_texts=texts)
    with pytest.raises(MRLError, match=r"20 query ids, but arrays of lengths .*'query texts': 19"):
        validate_dataset(bad, CFG)

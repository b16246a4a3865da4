"""Text end to end: the adapter learns to put a synthetic pair set's signal in its smallest prefix, and the CLI runs
ingest -> train -> evaluate on a tiny table embedded by the real MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import config_from_dict
from mrl.data import Dataset
from mrl.errors import MRLError
from mrl.text.adapter import load_adapter
from mrl.text.artifact import TextDataset, load_text_dataset, save_text_dataset
from mrl.text.evaluate import evaluate_retrieval, evaluate_text
from mrl.text.train import train_text_adapter

pytestmark = pytest.mark.slow  # trains adapters; the CLI test embeds with the real MiniLM


def synthetic_pairs(path: Path, n: int = 400, dim: int = 32, signal: int = 4, seed: int = 0,
                    test_every: int = 5) -> Path:
    """Documents whose meaning lies in a `signal`-dim subspace, rotated so every base dim carries a little of it and a
    lot of noise: the base's 4-dim prefix retrieves poorly; a 4-dim prefix holding the subspace retrieves well.
    Query i is document i moved a little within the subspace; every `test_every`-th query is held out."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    z = rng.normal(size=(n, signal))
    noise = 0.25 * rng.normal(size=(n, dim - signal))
    docs = np.hstack([z, noise]) @ rotation.T
    queries = np.hstack([z + 0.15 * rng.normal(size=(n, signal)), 0.25 * rng.normal(size=(n, dim - signal))]) @ rotation.T
    split = np.where(np.arange(n) % test_every == 0, "test", "train")
    documents = Dataset("vectors", docs.astype(np.float32), np.array([f"d{i}" for i in range(n)]),
                        np.full(n, -1), np.full(n, "train"), np.array([], str))
    td = TextDataset(documents, np.array([f"doc {i}" for i in range(n)]), np.array([f"q{i}" for i in range(n)]),
                     np.array([f"query {i}" for i in range(n)]), queries.astype(np.float32), split,
                     np.arange(n), np.arange(n), "synthetic", "synthetic")
    return save_text_dataset(td, path)


def test_training_improves_the_small_prefix(tmp_path):
    data = synthetic_pairs(tmp_path / "pairs.npz")
    cfg = config_from_dict({"text": {"nesting_dims": [4, 8, 32], "epochs": 30, "batch_size": 64, "lr": 0.01,
                                     "hidden_dim": 64}, "train": {"num_threads": 1}})
    logs: list[str] = []
    r = train_text_adapter(cfg, data, tmp_path / "adapter.pt", log=logs.append)
    assert r.epochs == 30 and np.isfinite(r.final_loss)
    # the default objective, both: the neighbours mined once, then one line per epoch
    assert logs[0].startswith("mined the top 7 base neighbours") and len(logs) == 31
    e = evaluate_text(tmp_path / "adapter.pt", data, k=5).results
    adapter, truncated = e["adapter"], e["truncated"]
    # the 4-dim prefix: from the base's poor truncation to close to the full-dim base
    assert truncated[4]["ndcg_at_5"] < 0.5 * truncated[32]["ndcg_at_5"]
    assert adapter[4]["ndcg_at_5"] > truncated[4]["ndcg_at_5"] + 0.3
    assert adapter[4]["ndcg_at_5"] > 0.8 * truncated[32]["ndcg_at_5"]
    assert adapter[32]["ndcg_at_5"] >= truncated[32]["ndcg_at_5"] - 0.05  # full-dim quality kept
    # the checkpoint describes itself: dims, base dim, where the data came from
    loaded = load_adapter(tmp_path / "adapter.pt")
    assert loaded.nesting_dims == [4, 8, 32] and loaded.config.model.embedding_dim == 32
    assert loaded.meta["epoch"] == 30 and loaded.meta["text_model_key"] == "synthetic"


def test_similarity_objective_trains_the_small_prefix_without_pairs(tmp_path):
    # every query held out: no train pairs, so only the label-free objective can train (over the documents alone)
    data = synthetic_pairs(tmp_path / "pairs.npz", n=300, test_every=1)
    cfg = config_from_dict({"text": {"objective": "similarity", "nesting_dims": [4, 8, 32], "epochs": 8,
                                     "batch_size": 64, "lr": 0.01, "hidden_dim": 0, "neighbours": 7},
                            "train": {"num_threads": 1}})
    logs: list[str] = []
    r = train_text_adapter(cfg, data, tmp_path / "adapter.pt", log=logs.append)
    assert r.unit == "items" and r.objective.startswith("similarity") and np.isfinite(r.final_loss)
    assert logs[0].startswith("mined the top 7 base neighbours among the 300 documents of each of 300 items")
    td = load_text_dataset(data)
    queries, relevant = td.relevant("test")  # (evaluate_text fits its PCA on the train pairs' documents: none here)
    e = evaluate_retrieval(td.query_x[queries], td.documents.x, relevant, [4, 8, 32], 5, None,
                           load_adapter(tmp_path / "adapter.pt").adapter)
    adapter = e["adapter"]
    truncated = evaluate_retrieval(td.query_x[queries], td.documents.x, relevant, [4, 8, 32], 5, td.documents.x)[
        "truncated"]
    # the 4-dim prefix learns the base's full-dim neighbourhoods, which the signal subspace decides
    assert adapter[4]["ndcg_at_5"] > truncated[4]["ndcg_at_5"] + 0.2
    assert adapter[32]["ndcg_at_5"] >= truncated[32]["ndcg_at_5"] - 0.03  # reconstruction keeps the full dim
    with pytest.raises(MRLError, match="no train-split queries"):  # the pair objective still needs pairs
        train_text_adapter(config_from_dict({"text": {"nesting_dims": [4, 32]}}), data, tmp_path / "p.pt")


def test_both_objectives_train_together(tmp_path):
    data = synthetic_pairs(tmp_path / "pairs.npz", n=200)
    cfg = config_from_dict({"text": {"objective": "both", "nesting_dims": [4, 32], "epochs": 2, "batch_size": 32,
                                     "hidden_dim": 16, "neighbours": 3, "similarity_weight": 0.5},
                            "train": {"num_threads": 1}})
    r = train_text_adapter(cfg, data, tmp_path / "adapter.pt", log=lambda _: None)
    assert r.unit == "pairs" and r.epochs == 2 and np.isfinite(r.final_loss)
    assert load_adapter(tmp_path / "adapter.pt").config.text.objective == "both"


def test_hard_negatives_train(tmp_path):
    data = synthetic_pairs(tmp_path / "pairs.npz", n=120)
    cfg = config_from_dict({"text": {"nesting_dims": [4, 32], "epochs": 2, "batch_size": 32, "hard_negatives": 2,
                                     "hidden_dim": 0,
                                     "hard_negative_skip": 1}, "train": {"num_threads": 1}})
    logs: list[str] = []
    r = train_text_adapter(cfg, data, tmp_path / "adapter.pt", log=logs.append)
    assert np.isfinite(r.final_loss) and logs[0].startswith("mined 2 hard negatives for each of 96 pairs")


def test_cli_ingest_train_evaluate(tmp_path):
    rows = [{"id": w, "text": w} for w in ("cat", "dog", "apple", "car", "piano", "river", "winter", "bread")]
    rows += [{"id": f"q{i}", "text": t, "positive": p, "split": s} for i, (t, p, s) in enumerate([
        ("a small domesticated feline", "cat", "train"), ("a loyal pet that barks", "dog", "train"),
        ("a red or green fruit", "apple", "test"), ("a vehicle with four wheels", "car", "train"),
        ("a large keyboard instrument", "piano", "train"), ("a stream of water flowing to the sea", "river", "test"),
        ("the coldest season of the year", "winter", "train"), ("a food baked from flour", "bread", "train")])]
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data, model, metrics = tmp_path / "text.npz", tmp_path / "adapter.pt", tmp_path / "metrics.json"
    common = ["--set", f"text.cache_dir={tmp_path / 'cache'}", "--set", "text.nesting_dims=[8, 64, 384]",
              "--set", "train.num_threads=1",
              "--set", "text.epochs=2", "--set", "text.eval_k=3"]
    runner = CliRunner()
    for args in (["ingest", "--source", "text", "--input", str(table), "--output", str(data)],
                 ["train", "--data", str(data), "--out", str(model)],
                 ["evaluate", "--model", str(model), "--data", str(data), "--metrics-out", str(metrics)]):
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == 0, result.output
    assert "| base, full 384 dims |" in result.output
    per_dim = json.loads(metrics.read_text())
    assert list(per_dim) == ["8", "64", "384"]
    assert set(per_dim["8"]) == {f"{p}{m}_at_3" for p in ("", "truncated_", "pca_") for m in ("recall", "ndcg", "mrr")}
    # both held-out queries find their word in the top 3 of the 8: with the base, and with the adapter at full dim
    # (two epochs on six pairs leave it near the identity it started from)
    assert per_dim["384"]["truncated_recall_at_3"] == 1.0 and per_dim["384"]["recall_at_3"] == 1.0
    assert torch.load(model, weights_only=True)["meta"]["encoder"] == "text_adapter"
    # search the documents with a new query text: the base embedding, then the adapter's 64-dim prefix
    query = "musical instrument with black and white keys"
    found = runner.invoke(app, ["search", "--text", query, "--data", str(data), "--k", "3", *common])
    assert found.exit_code == 0, found.output
    assert "base embedding at 384 dims" in found.output and "  1. piano " in found.output
    found = runner.invoke(app, ["search", "--text", query, "--data", str(data), "--model", str(model),
                                "--dim", "64", "--k", "3", *common])
    assert found.exit_code == 0 and "adapter adapter.pt at 64 dims" in found.output and "  3. " in found.output
    bad = runner.invoke(app, ["search", "--text", "a pet", "--data", str(data), "--dim", "999", *common])
    assert bad.exit_code == 2 and "--dim: 999 is outside 1..384" in bad.output

"""Training, resuming, evaluating and embedding for real on tiny datasets (seconds on 2 cores)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrl.checkpoint import load_model, read_checkpoint
from mrl.cli import app
from mrl.config import IngestConfig, load_config
from mrl.errors import MRLError
from mrl.evaluate import embed, evaluate
from mrl.ingest import ingest
from mrl.train import train

pytestmark = pytest.mark.slow  # every test trains a model

SMALL = ["model.nesting_dims=[4, 8, 16]", "model.embedding_dim=16", "model.cnn_widths=[8, 16, 16]",
         "train.batch_size=32", "train.lr=0.01", "evaluate.recall_ks=[1, 5]", "evaluate.map_k=5",
         "evaluate.probe_epochs=30"]


@pytest.fixture
def dataset(fmnist_dir, tmp_path):
    return ingest("fashion_mnist", fmnist_dir, tmp_path / "ds.npz", IngestConfig()).path


def config(*extra):
    return load_config(None, SMALL + list(extra))


def quiet(_line: str) -> None:
    pass


@pytest.mark.parametrize("objective", ["mrl", "mrl_e", "contrastive"])
def test_loss_falls_and_checkpoint_is_self_describing(dataset, tmp_path, objective):
    cfg = config("train.epochs=4", f"loss.objective={objective}")
    result = train(cfg, dataset, tmp_path / "m.pt", log=quiet)
    losses = [h["loss"] for h in result.history]
    # InfoNCE on 8 steps per epoch falls more slowly than cross-entropy.
    assert losses[-1] < (0.9 if objective == "contrastive" else 0.8) * losses[0], losses
    payload = read_checkpoint(result.path)
    assert payload["nesting_dims"] == [4, 8, 16] and payload["config"] == cfg.model_dump(mode="json")
    model = load_model(result.path)
    assert model.config == cfg and model.meta["classes"][0] == "T-shirt/top"


def test_training_is_seeded(dataset, tmp_path):
    cfg = config("train.epochs=1")
    a = train(cfg, dataset, tmp_path / "a.pt", log=quiet).history[0]["loss"]
    b = train(cfg, dataset, tmp_path / "b.pt", log=quiet).history[0]["loss"]
    assert a == b


def test_resume_after_interruption_matches_an_uninterrupted_run(dataset, tmp_path):
    cfg = config("train.epochs=3")
    full = train(cfg, dataset, tmp_path / "full.pt", log=quiet)

    def interrupt(_line):  # the epoch's log line comes after its checkpoint is written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, dataset, tmp_path / "part.pt", log=interrupt)
    assert read_checkpoint(tmp_path / "part.pt")["meta"]["epoch"] == 1
    lines = []
    resumed = train(cfg, dataset, tmp_path / "part.pt", resume=tmp_path / "part.pt", log=lines.append)
    assert lines[0].startswith("resumed from") and lines[0].endswith("at epoch 1")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-5)


def test_resume_refuses_a_different_model(dataset, tmp_path):
    train(config("train.epochs=1"), dataset, tmp_path / "m.pt", log=quiet)
    with pytest.raises(MRLError, match="checkpoint's model config differs"):
        train(config("train.epochs=2", "model.dropout=0.3"), dataset, tmp_path / "n.pt", resume=tmp_path / "m.pt",
              log=quiet)


def test_evaluate_writes_metrics_per_dim_and_a_plot(dataset, tmp_path):
    cfg = config("train.epochs=4")
    model_path = train(cfg, dataset, tmp_path / "m.pt", log=quiet).path
    result = evaluate(model_path, dataset, cfg.evaluate, tmp_path / "eval.json", tmp_path / "eval.png")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert list(saved) == ["4", "8", "16"]
    assert set(saved["16"]) == {"linear_top1", "head_top1", "knn_top1", "map_at_5", "recall_at_1", "recall_at_5"}
    # The synthetic classes are easy: a trained model must be far above chance (0.25) at every size.
    assert all(row["knn_top1"] > 0.6 and row["linear_top1"] > 0.6 for row in result.per_dim.values())
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embed_then_train_an_adapter_on_the_table(dataset, tmp_path):
    model_path = train(config("train.epochs=2"), dataset, tmp_path / "m.pt", log=quiet).path
    table = embed(model_path, dataset, tmp_path / "emb.parquet")
    r = ingest("embeddings", table, tmp_path / "vec.npz", IngestConfig())
    assert (r.kind, r.item_shape, r.n_train, r.n_test) == ("vectors", (16,), 240, 80)
    adapter = train(config("train.epochs=3", "model.embedding_dim=8", "model.nesting_dims=[2, 8]",
                           "model.mlp_hidden_dim=32"), r.path, tmp_path / "adapter.pt", log=quiet)
    model = load_model(adapter.path)
    assert model.encoder(torch.zeros(2, 16)).shape == (2, 8)


def test_adapter_learns_from_an_embeddings_table(embeddings_table, tmp_path):
    ds = ingest("embeddings", embeddings_table, tmp_path / "vec.npz", IngestConfig()).path
    cfg = config("train.epochs=5", "model.embedding_dim=8", "model.nesting_dims=[2, 4, 8]", "model.mlp_hidden_dim=64")
    path = train(cfg, ds, tmp_path / "a.pt", log=quiet).path
    result = evaluate(path, ds, cfg.evaluate)
    assert result.per_dim[8]["knn_top1"] > 0.8


def test_evaluate_rejects_a_dataset_the_model_was_not_built_for(dataset, embeddings_table, tmp_path):
    model_path = train(config("train.epochs=1"), dataset, tmp_path / "m.pt", log=quiet).path
    vectors = ingest("embeddings", embeddings_table, tmp_path / "vec.npz", IngestConfig()).path
    with pytest.raises(MRLError, match="the model expects images of shape"):
        evaluate(model_path, vectors, config().evaluate)


def test_supervised_objective_on_unlabeled_data_is_refused(tmp_path):
    from helpers import write_embeddings_table

    table = write_embeddings_table(tmp_path / "t.parquet", np.random.default_rng(0).normal(size=(40, 4)).tolist())
    ds = ingest("embeddings", table, tmp_path / "ds.npz", IngestConfig()).path
    with pytest.raises(MRLError, match="use loss.objective: contrastive"):
        train(config(), ds, tmp_path / "m.pt", log=quiet)
    assert not (tmp_path / "m.pt").exists()


def test_cli_end_to_end(fmnist_dir, tmp_path):
    runner = CliRunner()
    data, model = tmp_path / "ds.npz", tmp_path / "m.pt"
    sets = [arg for item in [*SMALL, "train.epochs=1"] for arg in ("--set", item)]
    assert runner.invoke(app, ["ingest", "--input", str(fmnist_dir), "--output", str(data)]).exit_code == 0
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(model), *sets])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(data), *sets,
                                 "--metrics-out", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert "knn_top1" in result.output and "\n   16 |" in result.output
    bad = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", str(data)])
    assert bad.exit_code == 2 and "missing.pt: checkpoint not found" in bad.output

"""Tracking and the promotion gate against a real MLflow sqlite store in a temp dir."""

import json
import re

import mlflow
import pytest
import torch

from mrl.config import IngestConfig, RegistryConfig, load_config
from mrl.errors import MRLError
from mrl.evaluate import evaluate
from mrl.ingest import ingest
from mrl.registry import aliases, promote_if_better, register_model, rollback_model
from mrl.tracking import log_training_run
from mrl.train import train

SMALL = ["model.nesting_dims=[4, 8, 16]", "model.embedding_dim=16", "model.cnn_widths=[8, 16, 16]",
         "train.batch_size=32", "evaluate.recall_ks=[1]", "evaluate.probe_epochs=20"]
NAME = "test-mrl"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A good model (trained) and a bad one (learning rate ~0), each trained and evaluated once."""
    from helpers import write_fashion_mnist

    tmp = tmp_path_factory.mktemp("registry")
    raw = write_fashion_mnist(tmp / "raw", 240, 80)
    data = ingest("fashion_mnist", raw, tmp / "ds.npz", IngestConfig()).path
    out = {}
    for name, lr, epochs in (("good", 0.01, 4), ("bad", 1e-7, 1)):
        cfg = load_config(None, [*SMALL, f"train.lr={lr}", f"train.epochs={epochs}"])
        model = train(cfg, data, tmp / f"{name}.pt", log=lambda _: None).path
        evaluate(model, data, cfg.evaluate, tmp / f"{name}.json", tmp / f"{name}.png")
        out[name] = (model, tmp / f"{name}.json", tmp / f"{name}.png")
    return out


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def log_and_register(trained, which, uri):
    model, metrics, plot = trained[which]
    run_id = log_training_run(model, metrics, plot, uri, experiment="test")
    return register_model(run_id, NAME, uri)


def test_run_logs_config_curves_per_dim_metrics_plot_and_a_loadable_model(trained, uri):
    model, metrics, plot = trained["good"]
    run_id = log_training_run(model, metrics, plot, uri, experiment="test")
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.params["train.epochs"] == "4" and run.data.params["model.nesting_dims"] == "[4, 8, 16]"
    assert {"knn_top1_d4", "knn_top1_d16", "linear_top1_d8", "map_at_10_d16"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run_id, "loss")) == 4  # one point per epoch
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert artifacts == {"evaluation/good.json", "evaluation/good.png"}
    loaded = mlflow.pytorch.load_model(run.data.tags["mrl.model_uri"])
    assert loaded(torch.zeros(3, 1, 28, 28, dtype=torch.uint8)).shape == (3, 16)


def test_gate_promotes_refuses_and_rolls_back(trained, uri):
    cfg = RegistryConfig(min_first=0.5, tolerance=0.005)
    first = log_and_register(trained, "good", uri)
    assert aliases(NAME, uri) == {"champion": None, "challenger": first.version}
    decision = promote_if_better(NAME, cfg, tracking_uri=uri)
    assert decision.promoted and decision.previous_champion is None and len(decision.rows) == 3
    assert aliases(NAME, uri)["champion"] == first.version

    # An equally good challenger passes the gate and records whom it replaced.
    second = log_and_register(trained, "good", uri)
    assert promote_if_better(NAME, cfg, tracking_uri=uri).promoted
    assert aliases(NAME, uri) == {"champion": second.version, "challenger": second.version}

    # A regressed challenger is refused with the dims named; champion stays.
    bad = log_and_register(trained, "bad", uri)
    good_metrics, bad_metrics = (json.loads(trained[w][1].read_text()) for w in ("good", "bad"))
    regressed = [int(m) for m in good_metrics if bad_metrics[m]["knn_top1"] < good_metrics[m]["knn_top1"] - 0.005]
    assert regressed, "the untrained model must be worse somewhere for this test to mean anything"
    with pytest.raises(MRLError, match=re.escape(f"v{bad.version} not promoted: knn_top1 below champion "
                                                 f"v{second.version} - 0.005 at dims {regressed}")):
        promote_if_better(NAME, cfg, tracking_uri=uri)
    assert aliases(NAME, uri) == {"champion": second.version, "challenger": bad.version}
    client = mlflow.MlflowClient(uri)
    assert client.get_run(bad.run_id).data.tags["mrl.gate"] == "refused"

    assert rollback_model(NAME, uri) == (second.version, first.version)
    assert aliases(NAME, uri)["champion"] == first.version
    with pytest.raises(MRLError, match=f"champion v{first.version} has no previous champion"):
        rollback_model(NAME, uri)


def test_first_model_needs_the_absolute_floor(trained, uri):
    log_and_register(trained, "bad", uri)
    worst = min(row["knn_top1"] for row in json.loads(trained["bad"][1].read_text()).values())
    with pytest.raises(MRLError, match=f"below floor {worst + 0.001} at dims"):
        promote_if_better(NAME, RegistryConfig(min_first=worst + 0.001), tracking_uri=uri)
    assert aliases(NAME, uri)["champion"] is None


def test_unreachable_tracking_server_is_one_clear_error_and_registers_nothing(trained, uri, monkeypatch):
    log_and_register(trained, "good", uri)
    model, metrics, plot = trained["good"]
    down = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(MRLError, match=r"MLflow tracking server http://127.0.0.1:9 is unreachable"):
        log_training_run(model, metrics, plot, down)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    with pytest.raises(MRLError, match="unreachable"):
        promote_if_better(NAME, RegistryConfig())
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert len(mlflow.MlflowClient(uri).search_model_versions(f"name='{NAME}'")) == 1
    assert aliases(NAME, uri)["champion"] is None


def test_run_artifacts_stay_beside_the_database(trained, uri, tmp_path):
    """A sqlite store's artifacts go next to its file, never into ./mlruns of the working directory."""
    run_id = log_training_run(*trained["good"], tracking_uri=uri)
    artifact_uri = mlflow.MlflowClient(uri).get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith((tmp_path / "mlruns").as_uri())

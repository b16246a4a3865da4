"""Tracking and the promotion gate against a real MLflow sqlite store in a temp dir."""

import hashlib
import json
import re
from pathlib import Path

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import IngestConfig, RegistryConfig, load_config
from mrl.errors import MRLError
from mrl.evaluate import evaluate
from mrl.ingest import ingest
from mrl.registry import aliases, lineage_line, promote_if_better, register_model, rollback_model, version_lineage
from mrl.tracking import log_training_run, params_sha256
from mrl.train import train

pytestmark = pytest.mark.slow  # trains two models and logs them to MLflow

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
    # Every evaluation metric is also a curve over the nesting dim: step = dim, value = that dim's score.
    per_dim = json.loads(metrics.read_text())
    for name in per_dim["16"]:
        history = sorted(client.get_metric_history(run_id, f"per_dim/{name}"), key=lambda point: point.step)
        assert [point.step for point in history] == [4, 8, 16], name
        assert [point.value for point in history] == pytest.approx([per_dim[m][name] for m in ("4", "8", "16")])
    # Fixed names with extensions, whatever the input files are called, so the UI previews them.
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert artifacts == {"evaluation/per_dim.json", "evaluation/per_dim.md", "evaluation/per_dim.png"}
    table = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/evaluation/per_dim.md")
    assert table.startswith("| dim | linear_top1 |") and f"| 16 | {per_dim['16']['linear_top1']:.4f} |" in table
    # Lineage and the experiment's kind (MLflow 3 shows untagged new experiments as GenAI ones).
    data = run.data.tags["mrl.data"]
    assert run.data.tags["mrl.data_sha256"] == hashlib.sha256(open(data, "rb").read()).hexdigest()
    config = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/params.json"))
    assert run.data.tags["mrl.params_sha256"] == params_sha256(config)  # the config the model was trained with
    assert len(run.data.tags["mrl.git_commit"]) == 40
    (dataset_input,) = run.inputs.dataset_inputs  # the run page's Datasets column
    assert dataset_input.dataset.name == Path(data).name
    assert run.data.tags["mrl.data_sha256"].startswith(dataset_input.dataset.digest)
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    loaded = mlflow.pytorch.load_model(run.data.tags["mrl.model_uri"])
    assert loaded(torch.zeros(3, 1, 28, 28, dtype=torch.uint8)).shape == (3, 16)


def description(uri, version):
    return mlflow.MlflowClient(uri).get_model_version(NAME, version).description


def has_every_dim(text, which, trained):
    """The per-dim summary table holds each dim's metrics as logged."""
    per_dim = json.loads(trained[which][1].read_text())
    return all(f"| {m} | {row['head_top1']:.4f} | {row['knn_top1']:.4f} |" in text for m, row in per_dim.items())


def test_gate_promotes_refuses_compares_and_rolls_back(trained, uri, tmp_path):
    cfg = RegistryConfig(min_first=0.5, tolerance=0.005)
    first = log_and_register(trained, "good", uri)
    assert aliases(NAME, uri) == {"champion": None, "challenger": first.version}
    assert description(uri, first.version).startswith("**Not gated yet")
    decision = promote_if_better(NAME, cfg, tracking_uri=uri)
    assert decision.promoted and decision.previous_champion is None and len(decision.rows) == 3
    assert aliases(NAME, uri)["champion"] == first.version
    text = description(uri, first.version)
    assert text.startswith("**Promoted to champion (first champion): knn_top1 >= floor 0.5 at every dim.**")
    assert has_every_dim(text, "good", trained)
    tags = mlflow.MlflowClient(uri).get_model_version(NAME, first.version).tags
    run_tags = mlflow.MlflowClient(uri).get_run(first.run_id).data.tags
    for key in ("mrl.data_sha256", "mrl.params_sha256", "mrl.git_commit"):  # lineage copied onto the version
        assert tags[key] == run_tags[key], key
    shown = lineage_line(version_lineage(NAME, first.version, uri))  # what `mrl model list` prints
    assert f"sha256 {tags['mrl.data_sha256'][:8]}" in shown and f"params {tags['mrl.params_sha256'][:8]}" in shown

    # An equally good challenger passes the gate and records whom it replaced.
    second = log_and_register(trained, "good", uri)
    assert promote_if_better(NAME, cfg, tracking_uri=uri).promoted
    assert aliases(NAME, uri) == {"champion": second.version, "challenger": second.version}
    assert description(uri, second.version).startswith(f"**Promoted to champion, replacing v{first.version}")

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
    text = description(uri, bad.version)
    assert text.startswith(f"**Not promoted: knn_top1 below champion v{second.version} - 0.005 at dims {regressed}; "
                           f"v{second.version} stays champion.**")
    assert has_every_dim(text, "bad", trained)
    stem = f"gate/knn_top1_vs_v{second.version}"
    assert {a.path for a in client.list_artifacts(bad.run_id, "gate")} == {f"{stem}.md", f"{stem}.png"}

    # `mrl model compare`: champion (good) vs challenger (bad) at every dim, and the plot where asked.
    plot = tmp_path / "out" / "compare.png"
    result = CliRunner().invoke(app, ["model", "compare", "--plot", str(plot), "--tracking-uri", uri,
                                      "--set", f"registry.model_name={NAME}"])
    assert result.exit_code == 0, result.output
    assert f"| dim | champion v{second.version} | challenger v{bad.version} | delta |" in result.output
    for m in good_metrics:
        ours, theirs = bad_metrics[m]["knn_top1"], good_metrics[m]["knn_top1"]
        assert f"| {m} | {theirs:.4f} | {ours:.4f} | {ours - theirs:+.4f} |" in result.output
    assert f"plot: {plot}" in result.output and plot.read_bytes()[:4] == b"\x89PNG"

    assert rollback_model(NAME, uri) == (second.version, first.version)
    assert aliases(NAME, uri)["champion"] == first.version
    with pytest.raises(MRLError, match=f"champion v{first.version} has no previous champion"):
        rollback_model(NAME, uri)


def compare_fails(uri, name=NAME):
    result = CliRunner().invoke(app, ["model", "compare", "--tracking-uri", uri, "--set", f"registry.model_name={name}"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_first_model_needs_the_absolute_floor(trained, uri):
    bad = log_and_register(trained, "bad", uri)
    worst = min(row["knn_top1"] for row in json.loads(trained["bad"][1].read_text()).values())
    with pytest.raises(MRLError, match=f"below floor {worst + 0.001} at dims"):
        promote_if_better(NAME, RegistryConfig(min_first=worst + 0.001), tracking_uri=uri)
    assert aliases(NAME, uri)["champion"] is None
    assert description(uri, bad.version).startswith(f"**Not promoted: knn_top1 below floor {worst + 0.001} at dims")

    # Nothing to compare: each missing piece is named on one line.
    assert "error: test-mrl: no 'champion' alias to compare; promote a version first" in compare_fails(uri)
    assert f"error: no-such-model: no registered model of that name in {uri}" in compare_fails(uri, "no-such-model")
    client = mlflow.MlflowClient(uri)
    client.set_registered_model_alias(NAME, "champion", bad.version)
    client.delete_registered_model_alias(NAME, "challenger")
    assert "error: test-mrl: no 'challenger' alias to compare; register one" in compare_fails(uri)


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


def test_run_artifacts_stay_beside_the_database(trained, tmp_path, monkeypatch):
    """A sqlite store's artifacts go next to its file, never into ./mlruns of the working directory, also
    when the URI is relative (resolved against the working directory, as MLflow resolves the database)."""
    monkeypatch.chdir(tmp_path)
    run_id = log_training_run(*trained["good"], tracking_uri="sqlite:///store/mlflow.db")
    artifact_uri = mlflow.MlflowClient("sqlite:///store/mlflow.db").get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith((tmp_path / "store" / "mlruns").as_uri())
    assert not (tmp_path / "mlruns").exists()

"""The `mrl` commands that need no trained model, through Typer's CliRunner: submitting pipelines to Kubeflow (a fake
`kfp.Client` records what would be sent), `mrl retrain`, `mrl pipeline compile`, and the bad input every command
refuses before touching anything: one line naming the file or the field, exit code 2.
The commands over a trained model (registry, index, search) are in tests/integration/test_cli_models.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import kfp
import pytest
import yaml
from helpers import REPO
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import load_config, parse_params

HOST = "http://kfp.example:8888"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments: str) -> str:
    """Exit code 2 and exactly one line of output, `error: ...`, holding each fragment."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (result.exit_code,
                                                                                          result.output)
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


class FakeKfpClient:
    """Stands in for kfp.Client: records each call (no cluster, no HTTP)."""

    instances: ClassVar[list[FakeKfpClient]] = []

    def __init__(self, host=None, existing_token=None, **kwargs):
        self.host, self.token, self.calls = host, existing_token, []
        FakeKfpClient.instances.append(self)

    def create_run_from_pipeline_package(self, pipeline_file, arguments=None, experiment_name=None, **kwargs):
        self.calls.append(("run", {"package": pipeline_file, "arguments": arguments,
                                   "experiment_name": experiment_name, **kwargs}))
        return SimpleNamespace(run_id=f"run-{len(self.calls)}")

    def create_experiment(self, name, **kwargs):
        self.calls.append(("experiment", {"name": name}))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, experiment_id, job_name, **kwargs):
        self.calls.append(("recurring", {"experiment_id": experiment_id, "job_name": job_name, **kwargs}))
        return SimpleNamespace(recurring_run_id="job-1")


@pytest.fixture
def kfp_calls(monkeypatch):
    """kfp.Client replaced by FakeKfpClient (pipelines.launch.kfp_client still builds it, token and all); yields the
    list of clients made."""
    FakeKfpClient.instances = []
    monkeypatch.setattr(kfp, "Client", FakeKfpClient)
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.setenv("KFP_TOKEN", "t0ken")
    yield FakeKfpClient.instances


def pipeline_inputs(package: Path) -> set[str]:
    """The compiled pipeline's run-time parameters: what a run may be given."""
    return set(next(yaml.safe_load_all(package.read_text()))["root"]["inputDefinitions"]["parameters"])


def same_params(submitted: dict, params: Path) -> bool:
    """The submitted params_yaml resolves to the configuration the command was given (as the file's text, or as the
    resolved configuration with any --set applied)."""
    return parse_params(submitted["params_yaml"]).model_dump() == load_config(params).model_dump()


def write_params(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- pipeline run --host: submit to Kubeflow -----------------------------------------------------------------------

def test_pipeline_run_with_a_host_submits_the_compiled_training_pipeline(kfp_calls, tmp_path):
    params = write_params(tmp_path / "params.yaml", "train:\n  epochs: 3\nregistry:\n  experiment: nightly\n")
    result = invoke("pipeline", "run", "--params", params, "--host", HOST, "--input", "/var/lib/mrl/raw",
                    "--tracking-uri", "http://mlflow:5000", "--milvus-uri", "http://milvus:19530")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"submitted training pipeline run run-1 to {HOST}"
    [client] = kfp_calls
    assert (client.host, client.token) == (HOST, "t0ken")  # $KFP_TOKEN as the bearer token
    [(kind, call)] = client.calls
    package = Path(call["package"])
    assert kind == "run" and package == REPO / "pipelines" / "training.yaml" and package.is_file()
    assert call["experiment_name"] == "nightly"
    assert same_params(call["arguments"], params)
    assert call["arguments"] | {"params_yaml": ""} == {"params_yaml": "", "tracking_uri": "http://mlflow:5000",
                                                      "input_path": "/var/lib/mrl/raw",
                                                      "milvus_uri": "http://milvus:19530", "source": ""}
    assert set(call["arguments"]) <= pipeline_inputs(package)  # every argument is one the pipeline takes


def test_pipeline_run_with_a_host_submits_the_video_pipeline_for_a_video_source(kfp_calls, tmp_path):
    params = write_params(tmp_path / "params.yaml", "ingest:\n  source: video\n")
    result = invoke("pipeline", "run", "--params", params, "--host", HOST)
    assert result.exit_code == 0, result.output
    assert f"submitted video pipeline run run-1 to {HOST}" in result.output
    [(_, call)] = kfp_calls[0].calls
    package = Path(call["package"])
    assert package == REPO / "pipelines" / "video.yaml" and package.is_file()
    assert call["experiment_name"] == load_config(None).registry.experiment
    assert same_params(call["arguments"], params)
    assert call["arguments"] | {"params_yaml": ""} == {"params_yaml": "", "tracking_uri": "", "input_path": "",
                                                      "milvus_uri": ""}  # the pods' $MLFLOW_TRACKING_URI, $MILVUS_URI
    assert set(call["arguments"]) <= pipeline_inputs(package)


@pytest.mark.parametrize("text, fragments", [
    (None, ["params.yaml: file not found"]),
    ("train:\n  epochs: many\n", ["params.yaml", "train.epochs"]),
    ("trian:\n  epochs: 3\n", ["params.yaml", "trian"]),
])
def test_pipeline_run_refuses_bad_params_before_submitting(kfp_calls, tmp_path, text, fragments):
    params = tmp_path / "params.yaml"
    if text is not None:
        params.write_text(text)
    one_line_error(invoke("pipeline", "run", "--params", params, "--host", HOST), *fragments)
    assert kfp_calls == []  # no client made: nothing submitted


def test_pipeline_drift_with_a_host_creates_a_recurring_run(kfp_calls, tmp_path):
    params = write_params(tmp_path / "params.yaml", "registry:\n  experiment: monitoring\n")
    result = invoke("pipeline", "drift", "--params", params, "--host", HOST, "--cron", "0 30 * * * *",
                    "--current", "/var/lib/mrl/query_log")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"recurring run job-1 on {HOST}: 0 30 * * * *"
    [experiment, recurring] = kfp_calls[0].calls
    assert experiment == ("experiment", {"name": "monitoring"})
    call = recurring[1]
    package = Path(call["pipeline_package_path"])
    assert package == REPO / "pipelines" / "drift.yaml" and package.is_file()
    assert (call["experiment_id"], call["cron_expression"], call["max_concurrency"]) == ("exp-1", "0 30 * * * *", 1)
    assert call["params"]["current_path"] == "/var/lib/mrl/query_log"
    assert same_params(call["params"], params)
    assert set(call["params"]) <= pipeline_inputs(package)


# --- retrain ------------------------------------------------------------------------------------------------------

def test_retrain_kfp_submits_the_training_pipeline_to_the_configured_host(kfp_calls, tmp_path, monkeypatch):
    params = write_params(tmp_path / "params.yaml", "ingest:\n  source: fashion_mnist\n  input: /data/fmnist\n")
    monkeypatch.setenv("KFP_HOST", HOST)
    for how in ("kfp", "auto"):  # auto: kfp, because a host is set
        result = invoke("retrain", "--how", how, "--params", params, "--tracking-uri", "http://mlflow:5000")
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"training pipeline submitted to {HOST}: run run-1"
    assert len(kfp_calls) == 2
    for client in kfp_calls:
        [(_, call)] = client.calls
        assert Path(call["package"]) == REPO / "pipelines" / "training.yaml"
        assert same_params(call["arguments"], params)
        assert call["arguments"] | {"params_yaml": ""} == {"params_yaml": "", "tracking_uri": "http://mlflow:5000",
                                                          "input_path": "/data/fmnist", "milvus_uri": "",
                                                          "source": "fashion_mnist"}


@pytest.mark.parametrize("args, fragments", [
    (["--how", "sideways"], ["retrain: unknown way 'sideways' (choose from local, kfp, dvc, github, auto)"]),
    (["--how", "kfp"], ["retrain: kfp needs a host (drift.kfp_host or $KFP_HOST)"]),
    (["--how", "github"], ["drift.github_repository: expected owner/name, got ''"]),
    (["--how", "github", "--set", "drift.github_repository=acme/mrl"], ["$GITHUB_TOKEN"]),
    (["--how", "auto"], ["retrain: dvc is not on PATH"]),  # auto without a KFP host: dvc
    (["--how", "kfp", "--params", "missing.yaml"], ["missing.yaml: file not found"]),
    (["--how", "kfp", "--set", "drift.kfp_hostt=x"], ["drift.kfp_hostt"]),
])
def test_retrain_refuses_bad_input_in_one_line_and_starts_nothing(kfp_calls, tmp_path, monkeypatch, args, fragments):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no dvc here: `auto` must not run `dvc repro` in the checkout
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke("retrain", *args), *fragments)
    assert kfp_calls == []


# --- pipeline compile ---------------------------------------------------------------------------------------------

def test_pipeline_compile_writes_the_three_pipelines_with_params_cluster_section(tmp_path):
    params = write_params(tmp_path / "params.yaml", "cluster:\n  train_gpus: 1\n")
    out = tmp_path / "compiled"
    result = invoke("pipeline", "compile", "--params", params, "--out-dir", out)
    assert result.exit_code == 0, result.output
    names = ("training.yaml", "video.yaml", "drift.yaml")
    assert result.output.splitlines() == [f"wrote {out / name}" for name in names]
    docs = {name: list(yaml.safe_load_all((out / name).read_text())) for name in names}
    assert {name: d[0]["pipelineInfo"]["name"] for name, d in docs.items()} == {
        "training.yaml": "mrl-training", "video.yaml": "mrl-video", "drift.yaml": "mrl-drift"}
    train = docs["training.yaml"][0]["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    assert train["resources"]["accelerator"]["resourceCount"] == "1"  # cluster.train_gpus from --params


@pytest.mark.parametrize("text, fragments", [
    ("cluster:\n  secrets: [mrl-typo]\n", ["cluster.secrets: unknown secret 'mrl-typo'"]),
    ("cluster:\n  train_gpus: -1\n", ["params.yaml", "cluster.train_gpus"]),
])
def test_pipeline_compile_refuses_a_bad_cluster_section_and_writes_nothing(tmp_path, text, fragments):
    params = write_params(tmp_path / "params.yaml", text)
    one_line_error(invoke("pipeline", "compile", "--params", params, "--out-dir", tmp_path / "compiled"), *fragments)
    assert not list(tmp_path.rglob("*.yaml")) or sorted(tmp_path.rglob("*.yaml")) == [params]


# --- bad input refused before any store is opened ---------------------------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["index", "promote"], ["promote: give exactly one of --data or --segments"]),
    (["index", "promote", "--data", "a.npz", "--segments", "b.npz"], ["promote: give exactly one of --data or --segments"]),
    (["search"], ["search: give exactly one of --id, --image, --clip, --text (got none)"]),
    (["search", "--id", "x", "--image", "q.png"], ["got --id, --image"]),
    (["search", "--id", "x", "--dim", "8"], ["--data, --model and --dim go with --text"]),
    (["model", "compare", "--set", "registry.tolerance=lots"], ["registry.tolerance"]),
    (["model", "promote", "--set", "registry.tolerance=lots"], ["registry.tolerance"]),
    (["model", "rollback", "--params", "missing.yaml"], ["missing.yaml: file not found"]),
    (["index", "rollback", "--set", "retrieval.no_such_key=1"], ["retrieval.no_such_key"]),
])
def test_commands_refuse_bad_arguments_in_one_line_before_opening_a_store(tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)  # a command that went on would open ./mlflow.db or ./milvus.db here
    one_line_error(invoke(*args), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_old_command_names_still_work_hidden_with_a_note():
    """The names before the command groups run the same command for one release, say so on stderr, and are not
    listed in `mrl --help`."""
    from mrl.cli import RENAMED

    listed = CliRunner().invoke(app, ["--help"]).output
    for old, (_, new) in RENAMED.items():
        assert CliRunner().invoke(app, [old, "--help"]).exit_code == 0, old
        assert f"│ {old} " not in listed, f"{old} is listed in mrl --help"
        assert all(CliRunner().invoke(app, [*path.split()[1:], "--help"]).exit_code == 0
                   for path in new.split(" / ")), new
    old = CliRunner().invoke(app, ["show-params", "--set", "train.epochs=3"])
    new = CliRunner().invoke(app, ["params", "show", "--set", "train.epochs=3"])
    assert old.exit_code == new.exit_code == 0
    assert old.output.splitlines()[0] == "note: this command is now `mrl params show`; the old name goes in the next release"
    assert old.output.splitlines()[1:] == new.output.splitlines() and '"epochs": 3' in new.output
    refused = CliRunner().invoke(app, ["models", "--plot", "x.png"])  # the old flag's own check is kept
    assert refused.exit_code == 2 and "--metric and --plot go with --compare" in refused.output

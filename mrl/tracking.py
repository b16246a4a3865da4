"""MLflow tracking: one run per trained model with its config, training curve, per-dim metrics, plot and model.

The run is logged after training and evaluation, from the checkpoint and the metrics file, so a failed
training never leaves a half-logged run and the same code serves the CLI, DVC and KFP.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
import yaml
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from mrl.checkpoint import load_model
from mrl.errors import MRLError
from mrl.models.onnx import export_onnx, prefers_onnx
from mrl.models.vectors_adapter import ENCODER as VECTORS_ADAPTER

DEFAULT_DB = "mlflow.db"
MODEL_URI_TAG = "mrl.model_uri"  # run tag: where the logged model lives (registered from there)
ONNX_TAG = "mrl.onnx"  # run tag: the artifact path of the model's ONNX graph (pretrained backbones: fast inference)
PREPROCESS_TAG = "mrl.preprocess"  # run tag: how pixels are prepared for the model (JSON)
# Text adapters (mrl.kind "text") map base sentence embeddings to theirs: these run tags name the base encoder (its
# directory when trained, and the hash of its files) that query text must be embedded with first.
TEXT_MODEL_TAG, TEXT_MODEL_KEY_TAG = "mrl.text_model", "mrl.text_model_key"
# Vectors adapters (`mrl adapt`) map a user's own embeddings to Matryoshka ones: the service passes query vectors
# through them (ADAPTS_TAG), and the gate compares the metric their evaluation reports (GATE_METRIC_TAG).
ADAPTS_TAG, GATE_METRIC_TAG = "mrl.adapts", "mrl.gate_metric"
# Per-dim metrics are also logged as "per_dim/<metric>" with step = the nesting dim, so MLflow draws each
# metric as a curve over prefix size (its charts group keys by the prefix before "/", apart from the
# per-epoch training curves).
PER_DIM_PREFIX = "per_dim/"
# MLflow 3's experiment tag for a model-training (not GenAI) experiment. The 3.17 UI decides its layout by the
# "GenAI / Model training" switch at the top left instead (or ?workflowType=machine_learning); earlier 3.x
# UIs and MLflow's own tools read the tag.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# Copied from the run onto its model versions (mrl model list shows them).
LINEAGE_TAGS = ("mrl.data", "mrl.data_sha256", "mrl.data_dvc_md5", "mrl.params_sha256", "mrl.git_commit")


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """explicit > $MLFLOW_TRACKING_URI > sqlite file in the current (project) directory."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when an HTTP tracking server is down (MLflow itself retries for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise MRLError(f"MLflow tracking server {uri} is unhealthy (HTTP {response.status})")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MRLError(f"MLflow tracking server {uri} is unreachable ({reason}); nothing was logged or registered") from None


def client(uri: str | None = None):
    """An MlflowClient for the resolved URI, after checking that a server URI answers."""
    uri = resolve_tracking_uri(uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)  # log_model and register_model use the fluent API's URI
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def set_experiment(c, name: str) -> None:
    """Make `name` the active experiment, creating it if needed, tagged as a model-training experiment.
    With a sqlite store MLflow would put its artifacts in ./mlruns of whatever directory the process runs in;
    keep them beside the database instead (the project directory for the default ./mlflow.db, a temp dir
    for a temp database). A relative sqlite path is resolved against the current directory, as MLflow does."""
    uri, (kind_key, kind) = c.tracking_uri, EXPERIMENT_KIND
    experiment = c.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
        c.create_experiment(name, artifact_location=location, tags={kind_key: kind})
    elif kind_key not in experiment.tags:  # experiments made before the tag existed, or by other tools
        c.set_experiment_tag(experiment.experiment_id, kind_key, kind)
    mlflow.set_experiment(name)


def per_dim_markdown(per_dim: dict[int, dict[str, float]]) -> str:
    """Every metric at every dim as a Markdown table (MLflow previews .md artifacts and descriptions)."""
    names = list(next(iter(per_dim.values())))
    lines = ["| dim | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    lines += [f"| {m} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |" for m, row in sorted(per_dim.items())]
    return "\n".join(lines)


def file_sha256(path: str | Path) -> str | None:
    """The file's sha256, or None where this process cannot read it (a KFP step sees only its own inputs)."""
    path = Path(path)
    if not str(path) or not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def params_sha256(config: dict[str, Any]) -> str:
    """Digest of the resolved configuration (every section, overrides applied): equal digests, equal params."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def dvc_md5(data_path: str) -> str | None:
    """The md5 DVC recorded for `data_path` as a stage output (dvc.lock in the working directory), when it is one."""
    lock = Path("dvc.lock")
    if not data_path or not lock.is_file():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        target = Path(data_path).resolve()
        for stage in stages.values():
            for out in stage.get("outs", []):
                if Path(out.get("path", "")).resolve() == target:
                    return out.get("md5")
    except (yaml.YAMLError, AttributeError, OSError):
        return None  # an unreadable lock file: lineage without it
    return None


def lineage_tags(data_path: str, config: dict[str, Any] | None = None) -> dict[str, str]:
    """Where the model came from: the dataset file and its sha256 (and DVC's md5 of it, under `dvc repro`), the
    params digest, and the git commit of the checkout this code runs from (none for a wheel installed outside one,
    as in the image)."""
    tags = {"mrl.data": data_path}
    if sha := file_sha256(data_path):
        tags["mrl.data_sha256"] = sha
    if md5 := dvc_md5(data_path):
        tags["mrl.data_dvc_md5"] = md5
    if config is not None:
        tags["mrl.params_sha256"] = params_sha256(config)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)  # the code that trained: this checkout
        if commit.returncode == 0:
            tags["mrl.git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass  # no git here: lineage without a commit
    return tags


def log_dataset_input(data_path: str, sha256: str | None) -> None:
    """The training data as the run's MLflow dataset input (the run page's Datasets column), named after the file,
    with its content digest."""
    if not data_path:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow warns that a local path could be two kinds of source
        dataset = MetaDataset(resolve_dataset_source(data_path), name=Path(data_path).name,
                              digest=(sha256 or "")[:36] or None)
    mlflow.log_input(dataset, context="training")


def flatten_config(config: dict[str, Any]) -> dict[str, str]:
    """{"train": {"lr": 0.003}} -> {"train.lr": "0.003"}: every key of params.yaml as an MLflow param."""
    return {f"{section}.{key}": json.dumps(value) if isinstance(value, list | dict) else str(value)
            for section, values in config.items() for key, value in values.items()}


def log_evaluation_artifacts(metrics_path: Path, per_dim: dict[int, dict[str, float]], plot_path: Path | None) -> None:
    """Fixed names with extensions, whatever the inputs are called (KFP names them `per_dim` and `plot`),
    so the MLflow UI previews them: evaluation/per_dim.json, per_dim.md (table) and per_dim.png."""
    mlflow.log_text(metrics_path.read_text(), "evaluation/per_dim.json")
    mlflow.log_text(per_dim_markdown(per_dim) + "\n", "evaluation/per_dim.md")
    if plot_path:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(plot_path, Path(tmp) / "per_dim.png")
            mlflow.log_artifact(str(Path(tmp) / "per_dim.png"), "evaluation")


def log_training_run(model_path: str | Path, metrics_path: str | Path, plot_path: str | Path | None = None,
                     tracking_uri: str | None = None, experiment: str = "mrl", run_name: str | None = None) -> str:
    """Log a trained, evaluated model as one MLflow run; return its run id."""
    model = load_model(model_path)
    try:
        per_dim = {int(m): row for m, row in json.loads(Path(metrics_path).read_text()).items()}
    except FileNotFoundError:
        raise MRLError(f"{metrics_path}: metrics file not found") from None
    except (ValueError, AttributeError) as e:
        raise MRLError(f"{metrics_path}: not a per-dim metrics JSON ({e})") from None
    if sorted(per_dim) != model.nesting_dims:
        raise MRLError(f"{metrics_path}: metrics for dims {sorted(per_dim)}, the model nests {model.nesting_dims}")
    if plot_path and not Path(plot_path).is_file():
        raise MRLError(f"{plot_path}: plot file not found")  # before the run starts: no half-logged run

    set_experiment(client(tracking_uri), experiment)
    cfg = model.config
    lineage = lineage_tags(str(model.meta.get("data", "")), cfg.model_dump(mode="json"))
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(flatten_config(cfg.model_dump(mode="json")))
        mlflow.set_tags({"mrl.objective": cfg.loss.objective, "mrl.nesting_dims": json.dumps(model.nesting_dims),
                         "mrl.kind": model.meta["kind"], "mrl.item_shape": json.dumps(model.meta["item_shape"]),
                         **lineage})
        if model.meta["kind"] == "text":
            mlflow.set_tags({TEXT_MODEL_TAG: model.meta["text_model"], TEXT_MODEL_KEY_TAG: model.meta["text_model_key"],
                             "mrl.objective": "pair_infonce"})  # loss.objective is the image models' setting
        if model.meta.get("encoder") == VECTORS_ADAPTER:
            mlflow.set_tags({ADAPTS_TAG: "vectors", "mrl.source": model.meta["source"],
                             "mrl.base_dim": str(model.meta["base_dim"]), "mrl.vectors_sha256": model.meta["vectors_sha256"],
                             GATE_METRIC_TAG: f"recall_at_{model.meta['eval_k']}"})
        log_dataset_input(str(model.meta.get("data", "")), lineage.get("mrl.data_sha256"))
        for record in model.meta["history"]:
            mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))
        # Flat keys (knn_top1_d16): what the gate reads and what runs are compared and searched by.
        mlflow.log_metrics({f"{name}_d{m}": float(value) for m, row in per_dim.items() for name, value in row.items()})
        for m, row in sorted(per_dim.items()):  # the same numbers as curves over the dim
            mlflow.log_metrics({PER_DIM_PREFIX + name: float(value) for name, value in row.items()}, step=m)
        log_evaluation_artifacts(Path(metrics_path), per_dim, Path(plot_path) if plot_path else None)
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/params.json")
        example = np.zeros((2, *model.meta["item_shape"]), dtype=np.uint8 if model.meta["kind"] == "images" else np.float32)
        info = mlflow.pytorch.log_model(
            model.encoder, name="model", input_example=example, serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        if "preprocess" in model.meta:
            mlflow.set_tag(PREPROCESS_TAG, json.dumps(model.meta["preprocess"]))
        if prefers_onnx(model.encoder):  # the same module, as a graph ONNX Runtime runs ~5x faster on CPU
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(export_onnx(model.encoder, tuple(model.meta["item_shape"]),
                                                    Path(tmp) / "encoder.onnx")), "onnx")
            mlflow.set_tag(ONNX_TAG, "onnx/encoder.onnx")
        return run.info.run_id

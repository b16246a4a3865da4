"""MLflow tracking: one run per trained model with its config, training curve, per-dim metrics, plot and model.

The run is logged after training and evaluation, from the checkpoint and the metrics file, so a failed
training never leaves a half-logged run and the same code serves the CLI, DVC and KFP.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mrl.checkpoint import load_model
from mrl.errors import MRLError

DEFAULT_DB = "mlflow.db"
MODEL_URI_TAG = "mrl.model_uri"  # run tag: where the logged model lives (registered from there)


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
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)  # log_model and register_model use the fluent API's URI
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def set_experiment(c, name: str) -> None:
    """Make `name` the active experiment, creating it if needed. With a sqlite store MLflow would put its
    artifacts in ./mlruns of whatever directory the process runs in; keep them beside the database instead
    (the project directory for the default ./mlflow.db, a temp dir for a temp database)."""
    import mlflow

    uri = c.tracking_uri
    if uri.startswith("sqlite:///") and c.get_experiment_by_name(name) is None:
        c.create_experiment(name, artifact_location=(Path(uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri())
    mlflow.set_experiment(name)


def flatten_config(config: dict[str, Any]) -> dict[str, str]:
    """{"train": {"lr": 0.003}} -> {"train.lr": "0.003"}: every key of params.yaml as an MLflow param."""
    return {f"{section}.{key}": json.dumps(value) if isinstance(value, list | dict) else str(value)
            for section, values in config.items() for key, value in values.items()}


def log_training_run(model_path: str | Path, metrics_path: str | Path, plot_path: str | Path | None = None,
                     tracking_uri: str | None = None, experiment: str = "mrl", run_name: str | None = None) -> str:
    """Log a trained, evaluated model as one MLflow run; return its run id."""
    import mlflow
    import numpy as np
    import torch

    model = load_model(model_path)
    try:
        per_dim = {int(m): row for m, row in json.loads(Path(metrics_path).read_text()).items()}
    except FileNotFoundError:
        raise MRLError(f"{metrics_path}: metrics file not found") from None
    except (ValueError, AttributeError) as e:
        raise MRLError(f"{metrics_path}: not a per-dim metrics JSON ({e})") from None
    if sorted(per_dim) != model.nesting_dims:
        raise MRLError(f"{metrics_path}: metrics for dims {sorted(per_dim)}, the model nests {model.nesting_dims}")

    set_experiment(client(tracking_uri), experiment)
    cfg = model.config
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(flatten_config(cfg.model_dump(mode="json")))
        mlflow.set_tags({"mrl.objective": cfg.loss.objective, "mrl.nesting_dims": json.dumps(model.nesting_dims),
                         "mrl.kind": model.meta["kind"], "mrl.item_shape": json.dumps(model.meta["item_shape"]),
                         "mrl.data": str(model.meta.get("data", ""))})
        for record in model.meta["history"]:
            mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))
        mlflow.log_metrics({f"{name}_d{m}": float(value) for m, row in per_dim.items() for name, value in row.items()})
        mlflow.log_artifact(str(metrics_path), "evaluation")
        if plot_path:
            mlflow.log_artifact(str(plot_path), "evaluation")
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/params.json")
        example = np.zeros((2, *model.meta["item_shape"]), dtype=np.uint8 if model.meta["kind"] == "images" else np.float32)
        info = mlflow.pytorch.log_model(
            model.encoder, name="model", input_example=example, serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        return run.info.run_id

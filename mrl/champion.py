"""The champion model: which registered version serves, and embedding with it. Promotion, drift checks, video
segmentation and the service all start here (a module of its own, next to the registry, so none of them imports
another to get it)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from mrl.config import Config
from mrl.errors import MRLError
from mrl.models.onnx import OnnxModel, embed_batches
from mrl.registry import CHAMPION, alias_version
from mrl.tracking import ADAPTS_TAG, ONNX_TAG
from mrl.tracking import client as mlflow_client


@dataclass
class Champion:
    version: str
    run_id: str
    model_uri: str
    nesting_dims: list[int]
    kind: str
    item_shape: list[int]
    adapts: str = ""  # "vectors": an adapter of the user's own vectors (`mrl adapt`): query vectors go through it


def resolve_champion(cfg: Config, tracking_uri: str | None, version: str | None = None,
                     name: str | None = None) -> Champion:
    """The champion of `name` (default registry.model_name), or its `version`."""
    c = mlflow_client(tracking_uri)
    name = name or cfg.registry.model_name
    version = version or alias_version(c, name, CHAMPION)
    if version is None:
        raise MRLError(f"{name}: no '{CHAMPION}' model to promote an index for; run the training pipeline first")
    try:
        run_id = c.get_model_version(name, version).run_id
    except MlflowException:
        raise MRLError(f"{name}: no model version {version!r} in the registry at {c.tracking_uri}") from None
    tags = c.get_run(run_id).data.tags
    return Champion(version, run_id, f"models:/{name}/{version}", json.loads(tags["mrl.nesting_dims"]),
                    tags.get("mrl.kind", "images"), json.loads(tags.get("mrl.item_shape", "[]")),
                    tags.get(ADAPTS_TAG, ""))


def load_registered_model(model_uri: str):
    """The torch module behind a models:/ URI; MRLError if its files are gone (e.g. the artifact store was deleted
    while the registry database was kept)."""
    try:
        return mlflow.pytorch.load_model(model_uri)
    except (MlflowException, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MRLError(f"{model_uri}: cannot load the model ({reason}); its artifacts under "
                       f"{mlflow.get_tracking_uri()} may have been moved or deleted") from None


def registered_onnx(model_uri: str, tracking_uri: str | None = None) -> OnnxModel | None:
    """The ONNX graph logged beside a registered model (pretrained backbones), ready to run; None if it has none."""
    c = mlflow_client(tracking_uri)
    name, _, version = model_uri.removeprefix("models:/").partition("/")
    try:
        run_id = c.get_model_version(name, version).run_id
        artifact = c.get_run(run_id).data.tags.get(ONNX_TAG)
    except MlflowException:
        return None  # not a model version of this registry: loading the model says so, naming it
    if not artifact:
        return None
    try:
        return OnnxModel(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact))
    except (MlflowException, OSError) as e:
        raise MRLError(f"{model_uri}: cannot load its ONNX graph ({str(e).splitlines()[0]})") from None


def embed_with(model_uri: str, x: np.ndarray, batch_size: int, desc: str = "embedding catalogue",
               tracking_uri: str | None = None) -> np.ndarray:
    """Embed with a registered model; models:/name/version resolves against tracking_uri (resolved as usual). A model
    logged with an ONNX graph (a pretrained backbone) runs under ONNX Runtime."""
    mlflow_client(tracking_uri)  # sets the registry URI that models:/ refers to
    fast = registered_onnx(model_uri, tracking_uri) if model_uri.startswith("models:/") else None
    if fast is not None:
        return embed_batches(fast, x, min(batch_size, 64), desc)
    model = load_registered_model(model_uri)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()
    return embed_batches(run, x, batch_size, desc)

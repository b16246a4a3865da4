"""The champion model: which registered version serves, and embedding with it. Promotion, drift checks, video
segmentation and the service all start here (a module of its own, next to the registry, so none of them imports
another to get it)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from mlflow.exceptions import MlflowException

from mrl.config import Config
from mrl.errors import MRLError
from mrl.progress import progress
from mrl.registry import CHAMPION, alias_version
from mrl.tracking import client as mlflow_client


@dataclass
class Champion:
    version: str
    run_id: str
    model_uri: str
    nesting_dims: list[int]
    kind: str
    item_shape: list[int]


def resolve_champion(cfg: Config, tracking_uri: str | None, version: str | None = None) -> Champion:
    c = mlflow_client(tracking_uri)
    name = cfg.registry.model_name
    version = version or alias_version(c, name, CHAMPION)
    if version is None:
        raise MRLError(f"{name}: no '{CHAMPION}' model to promote an index for; run the training pipeline first")
    try:
        run_id = c.get_model_version(name, version).run_id
    except MlflowException:
        raise MRLError(f"{name}: no model version {version!r} in the registry at {c.tracking_uri}") from None
    tags = c.get_run(run_id).data.tags
    return Champion(version, run_id, f"models:/{name}/{version}", json.loads(tags["mrl.nesting_dims"]),
                    tags.get("mrl.kind", "images"), json.loads(tags.get("mrl.item_shape", "[]")))


def load_registered_model(model_uri: str):
    """The torch module behind a models:/ URI; MRLError if its files are gone (e.g. the artifact store was deleted
    while the registry database was kept)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pytorch.load_model(model_uri)
    except (MlflowException, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MRLError(f"{model_uri}: cannot load the model ({reason}); its artifacts under "
                       f"{mlflow.get_tracking_uri()} may have been moved or deleted") from None


def embed_with(model_uri: str, x: np.ndarray, batch_size: int, desc: str = "embedding catalogue",
               tracking_uri: str | None = None) -> np.ndarray:
    """Embed with a registered model; models:/name/version resolves against tracking_uri (resolved as usual)."""
    import torch

    mlflow_client(tracking_uri)  # sets the registry URI that models:/ refers to
    model = load_registered_model(model_uri)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).numpy()
                               for i in progress(range(0, len(x), batch_size), desc, "batch")]).astype(np.float32)

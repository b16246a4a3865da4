"""Finding the served collection's reference: the Milvus serving alias names the collection, and MLflow holds a
copy of its reference where the local file is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mrl.config import Config
from mrl.drift.reference import reference_path
from mrl.errors import MRLError
from mrl.retrieval import milvus_index as mi


def served_reference(cfg: Config, milvus_uri: str | None, tracking_uri: str | None = None,
                     log: Callable[[str], None] = print) -> Path:
    """The reference of the collection the serving alias points at now (after a rollback: the older one's).

    Promotion writes it to drift.reference_dir and logs it to the model version's MLflow run; where the local
    file is missing (a check running on another machine or pod), it is downloaded from that run.
    """
    client = mi.connect(milvus_uri)
    try:
        served = mi.alias_target(client, cfg.retrieval.collection_prefix)
        if served is None:
            raise MRLError(f"Milvus alias {cfg.retrieval.collection_prefix} does not exist: promote an index first, "
                           "or pass --reference")
        info = mi.CollectionInfo.read(client, served)
    finally:
        client.close()
    path = reference_path(cfg, served)
    if path.exists():
        return path
    # mrl.tracking imports torch (2 s); only a reference missing here needs it
    from mrl.tracking import client as mlflow_client

    registry = mlflow_client(tracking_uri)
    run_id = registry.get_model_version(info.model_name, info.model_version).run_id
    log(f"{path} not here: downloading it from MLflow run {run_id}")
    try:
        registry.download_artifacts(run_id, f"drift/{path.name}", str(path.parent))
    except Exception as e:  # MlflowException or OSError, depending on the artifact store
        raise MRLError(f"{path}: drift reference not found here, nor in MLflow run {run_id} "
                       f"({type(e).__name__})") from None
    return path

"""Start the training pipeline: on kfp.local, or submitted to a KFP cluster. What `mrl retrain` and the drift
pipeline's retrain step (components/retrain.py) call, through `launchers()`.

The pipeline definitions are imported inside the launchers: they import kfp.compiler, which cannot load inside a KFP
step (`_KFP_RUNTIME`), where the retrain step imports this module."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.local import init_local, quiet_kfp

TRAINING_YAML, VIDEO_YAML = (Path(__file__).with_name(f"{n}.yaml") for n in ("training", "video"))


def kfp_client(host: str):
    """A KFP API client; $KFP_TOKEN, when set, is sent as the bearer token (clusters behind an auth proxy)."""
    import kfp

    return kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN") or None)


def run_local(params_yaml: str, tracking_uri: str, pipeline_root: Path, source: str = "", input_path: str = "",
              milvus_uri: str = "", runner: str = "subprocess") -> str:
    """Run every step on kfp.local (runner: a subprocess here, or a container of the project image); returns the
    promoted model version. Raises RuntimeError naming the failed task (its log, above, has the one-line reason)."""
    from pipelines.training import training_pipeline

    init_local(pipeline_root, runner, tracking_uri, milvus_uri, input_path)
    with quiet_kfp(pipeline_root):
        task = training_pipeline(params_yaml=params_yaml, source=source, input_path=input_path,
                                 tracking_uri=tracking_uri, milvus_uri=milvus_uri)
    return str(task.output)


def submit(host: str, params_yaml: str, tracking_uri: str = "", experiment: str = "mrl", source: str = "",
           input_path: str = "", milvus_uri: str = "", package: Path | None = None, video: bool = False) -> str:
    """Submit a compiled pipeline YAML (default: the training pipeline's, or with `video` the video pipeline's) to a
    KFP cluster; returns the run id."""

    arguments = {"params_yaml": params_yaml, "tracking_uri": tracking_uri, "input_path": input_path,
                 "milvus_uri": milvus_uri}
    if not video:
        arguments["source"] = source  # the video pipeline has no source: it reads videos
    package = package or (VIDEO_YAML if video else TRAINING_YAML)
    run = kfp_client(host).create_run_from_pipeline_package(str(package), experiment_name=experiment,
                                                                 arguments=arguments)
    return run.run_id


def launchers():
    """This front-end's pipeline launchers, for mrl.retrain (the library does not import pipelines/)."""
    from mrl.retrain import Launchers

    return Launchers(run_local=run_local, submit=submit)

"""Run the video and drift pipelines: locally with kfp.local, or on a Kubeflow Pipelines cluster. (The training
pipeline: pipelines/launch.py.)"""

from __future__ import annotations

from pathlib import Path

from pipelines.launch import kfp_client
from pipelines.local import init_local, quiet_kfp

DRIFT_YAML = Path(__file__).with_name("drift.yaml")


def run_video_local(params_yaml: str, tracking_uri: str, pipeline_root: Path, input_path: str = "",
                    milvus_uri: str = "", runner: str = "subprocess") -> str:
    """The video pipeline on kfp.local; returns the promoted segments collection. Raises RuntimeError naming the
    failed task, as run_local."""
    from pipelines import video as video_pipelines

    init_local(pipeline_root, runner, tracking_uri, milvus_uri, input_path)
    with quiet_kfp(pipeline_root):
        task = video_pipelines.video_pipeline(params_yaml=params_yaml, input_path=input_path,
                                              tracking_uri=tracking_uri, milvus_uri=milvus_uri)
    return str(task.output)


def run_drift_local(params_yaml: str, current_path: str, pipeline_root: Path, tracking_uri: str = "",
                    milvus_uri: str = "", reference_path: str = "", runner: str = "subprocess") -> bool:
    """The drift pipeline on kfp.local; returns whether drift was found (the retrain step ran if so)."""
    from pipelines import drift as drift_pipelines

    init_local(pipeline_root, runner, tracking_uri, milvus_uri, current_path)
    with quiet_kfp(pipeline_root):
        task = drift_pipelines.drift_pipeline(params_yaml=params_yaml, current_path=current_path,
                                              tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                              reference_path=reference_path)
    return bool(task.output)


def schedule_drift(host: str, params_yaml: str, cron: str, current_path: str = "", experiment: str = "mrl",
                   tracking_uri: str = "", milvus_uri: str = "", package: Path = DRIFT_YAML) -> str:
    """Create a KFP recurring run of the compiled drift pipeline (cron has six fields: seconds first)."""

    client = kfp_client(host)
    experiment_id = client.create_experiment(experiment).experiment_id
    arguments = {"params_yaml": params_yaml, "tracking_uri": tracking_uri, "milvus_uri": milvus_uri}
    if current_path:
        arguments["current_path"] = current_path
    job = client.create_recurring_run(experiment_id, "mrl-drift", cron_expression=cron, max_concurrency=1,
                                      pipeline_package_path=str(package), params=arguments, no_catchup=True)
    return job.recurring_run_id

"""Drift-monitoring pipeline: check the service's query-log window against the served collection's reference;
on drift, start drift.on_drift (retraining). Meant to run as a KFP recurring run
(`mrl pipeline drift --host URL --cron ...`)."""

from pathlib import Path

from kfp import compiler, dsl

from components.drift import drift_op
from components.retrain import retrain_op
from mrl.config import ClusterConfig
from pipelines.cluster import DATA_MOUNT, DEFAULT_CLUSTER, on_cluster

COMPILED = Path(__file__).with_suffix(".yaml")


def build(cluster: ClusterConfig = DEFAULT_CLUSTER):
    @dsl.pipeline(name="mrl-drift", description="Embedding drift check of the query log; retrain on drift.")
    def drift_pipeline(params_yaml: str = "", current_path: str = f"{DATA_MOUNT}/query_log", tracking_uri: str = "",
                       milvus_uri: str = "", reference_path: str = "") -> bool:
        check = on_cluster(drift_op(params_yaml=params_yaml, current_path=current_path, tracking_uri=tracking_uri,
                                    milvus_uri=milvus_uri, reference_path=reference_path), cluster)
        check.set_caching_options(False)  # the window changes between runs with the same arguments
        with dsl.If(check.outputs["Output"] == True):  # noqa: E712 (a KFP condition, not a Python comparison)
            on_cluster(retrain_op(params_yaml=params_yaml, tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                  summary=check.outputs["summary"]), cluster).set_caching_options(False)
        return check.outputs["Output"]

    return drift_pipeline


drift_pipeline = build()


def compile_pipeline(path: Path = COMPILED, cluster: ClusterConfig = DEFAULT_CLUSTER) -> Path:
    compiler.Compiler().compile(build(cluster), str(path))
    return path


if __name__ == "__main__":
    print(f"wrote {compile_pipeline()}")

"""Kubernetes wiring of pipeline steps (kfp-kubernetes): secrets as env vars, the shared data volume, GPUs.

Compiled into the pipeline YAML's platform spec; kfp.local ignores it, so local runs are unchanged.
"""

from kfp import dsl, kubernetes

from mrl.config import ClusterConfig
from mrl.errors import MRLError

DATA_MOUNT = "/var/lib/mrl"
DEFAULT_CLUSTER = ClusterConfig()
# The keys each Secret carries (docs/deployment.md); every key is optional, so a missing Secret skips its vars.
SECRET_KEYS = {
    "mrl-mlflow": ["MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"],
    "mrl-milvus": ["MILVUS_URI"],
    "mrl-drift": ["GITHUB_TOKEN", "KFP_TOKEN"],
}


def on_cluster(task: dsl.PipelineTask, cluster: ClusterConfig) -> dsl.PipelineTask:
    for name in cluster.secrets:
        if name not in SECRET_KEYS:
            raise MRLError(f"cluster.secrets: unknown secret {name!r} (known: {', '.join(SECRET_KEYS)})")
        kubernetes.use_secret_as_env(task, name, {key: key for key in SECRET_KEYS[name]}, optional=True)
    if cluster.data_pvc:
        kubernetes.mount_pvc(task, cluster.data_pvc, DATA_MOUNT)
    return task


def training_resources(task: dsl.PipelineTask, cluster: ClusterConfig) -> dsl.PipelineTask:
    """CPU/memory requests, and with train_gpus > 0 a GPU limit on GPU nodes (run it with the CUDA image)."""
    task.set_cpu_request(cluster.train_cpu).set_memory_request(cluster.train_memory)
    if cluster.train_gpus:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(cluster.train_gpus)
        for key, value in cluster.gpu_node_selector.items():
            kubernetes.add_node_selector(task, key, value)
        if cluster.gpu_toleration:
            kubernetes.add_toleration(task, key=cluster.gpu_toleration, operator="Exists", effect="NoSchedule")
    return task

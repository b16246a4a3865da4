"""The checked-in pipeline YAML is what the code compiles to (recompile with `mrl pipeline compile`), and the
Kubernetes wiring from params' cluster section lands in the platform spec."""

import pytest
import yaml

from mrl.config import ClusterConfig
from mrl.errors import MRLError
from pipelines import drift, training, video


def documents(path) -> list[dict]:
    """The pipeline spec, then the platform (Kubernetes) spec."""
    return list(yaml.safe_load_all(path.read_text()))


STEPS = {"training": {"ingest", "validate", "train", "evaluate", "register", "plan-promotion", "shard-list", "insert-shard",
                      "finish-promotion", "dataset-drift"},
         "video": {"ingest-videos", "validate-frames", "segment-videos", "validate-segments", "promote-segments"},
         "drift": {"drift", "retrain"}}
PIPELINES = [("training", training), ("video", video), ("drift", drift)]


@pytest.mark.parametrize("module", [m for _, m in PIPELINES], ids=[n for n, _ in PIPELINES])
def test_pipeline_compiles_to_the_checked_in_yaml(module, tmp_path):
    fresh = module.compile_pipeline(tmp_path / module.COMPILED.name)
    assert documents(fresh) == documents(module.COMPILED), \
        f"pipelines/{module.COMPILED.name} is stale: run `mrl pipeline compile` and commit it"


@pytest.mark.parametrize("name, module", PIPELINES)
def test_every_step_runs_in_the_project_image_without_installs(name, module):
    executors = documents(module.COMPILED)[0]["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}-op" for s in STEPS[name]}
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == "ghcr.io/mrl-platform/mrl:0.1.0"
        assert "pip install" not in " ".join(container["command"])


def platform(spec_path) -> dict:
    return documents(spec_path)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("name, module", PIPELINES)
def test_every_step_gets_the_secrets_and_the_data_volume(name, module):
    executors = platform(module.COMPILED)
    assert set(executors) == {f"exec-{s}-op" for s in STEPS[name]}
    for executor in executors.values():
        secrets = {s["secretName"]: {k["secretKey"] for k in s["keyToEnv"]} for s in executor["secretAsEnv"]}
        assert secrets["mrl-milvus"] == {"MILVUS_URI"} and "MLFLOW_TRACKING_URI" in secrets["mrl-mlflow"]
        assert all(s["optional"] for s in executor["secretAsEnv"])
        assert executor["pvcMount"][0]["mountPath"] == "/var/lib/mrl"


def test_gpu_training_variant(tmp_path):
    cluster = ClusterConfig(train_gpus=2, gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"})
    path = training.compile_pipeline(tmp_path / "training.yaml", cluster)
    resources = documents(path)[0]["deploymentSpec"]["executors"]["exec-train-op"]["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "2" and resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    train = platform(path)["exec-train-op"]
    assert train["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert train["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "accelerator" not in documents(training.COMPILED)[0]["deploymentSpec"]["executors"][
        "exec-train-op"]["container"].get("resources", {})


def test_an_unknown_secret_is_named(tmp_path):
    with pytest.raises(MRLError, match="cluster.secrets: unknown secret 'mrl-typo'"):
        drift.compile_pipeline(tmp_path / "d.yaml", ClusterConfig(secrets=["mrl-typo"]))

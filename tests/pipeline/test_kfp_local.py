"""The whole training pipeline on kfp.local (SubprocessRunner, no venv) on a few hundred images."""

import json

import mlflow
import pytest
from helpers import small_params

from mrl.registry import aliases
from mrl.retrieval import milvus_index as mi
from pipelines.run import latest_local_output, run_local


def test_pipeline_trains_evaluates_registers_and_promotes(raw_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "kfp"
    milvus = str(tmp_path / "milvus.db")
    version = run_local(small_params(raw_dir), uri, root, milvus_uri=milvus)
    assert version == "1"
    assert aliases("fashion-mnist-mrl", uri) == {"champion": "1", "challenger": "1"}

    per_dim = json.loads(latest_local_output(root, "evaluate-op", "per_dim").read_text())
    assert list(per_dim) == ["4", "8", "16"]
    kfp_metrics = json.loads(latest_local_output(root, "evaluate-op", "executor_output.json").read_text())
    logged = kfp_metrics["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["knn_top1_d16"] == pytest.approx(per_dim["16"]["knn_top1"])
    assert (latest_local_output(root, "evaluate-op", "plot").read_bytes()[:4]) == b"\x89PNG"

    run_id = mlflow.MlflowClient(uri).get_model_version("fashion-mnist-mrl", "1").run_id
    assert mlflow.MlflowClient(uri).get_run(run_id).data.metrics["knn_top1_d16"] == pytest.approx(per_dim["16"]["knn_top1"])

    promotion = json.loads(latest_local_output(root, "promote-op", "promotion").read_text())
    assert promotion["collection"] == "items_v1" and promotion["rows"] == 400
    client = mi.connect(milvus)
    assert mi.alias_target(client, "items") == "items_v1"
    client.close()


def test_bad_data_stops_the_pipeline_before_training(raw_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "kfp"
    with pytest.raises(RuntimeError, match="validate-op"):
        run_local(small_params(raw_dir, validation={"min_train_items": 100_000}), uri, root,
                  milvus_uri=str(tmp_path / "milvus.db"))
    assert latest_local_output(root, "train-op", "model") is None
    assert aliases("fashion-mnist-mrl", uri) == {"champion": None, "challenger": None}

"""ingest.source: text through the KFP training pipeline on kfp.local: ingest (the real MiniLM) -> validate (the text
suite) -> train the adapter -> evaluate against truncation and PCA -> register and gate on nDCG@k -> promote the
documents -> drift check of the held-out split."""

import mlflow
import pytest
import yaml
from helpers import TEXT_PARAMS, write_text_table

from mrl.config import config_yaml, load_config
from mrl.retrieval import milvus_index as mi
from pipelines.launch import run_local
from pipelines.local import latest_local_output

pytestmark = pytest.mark.slow  # a whole pipeline, MiniLM and Milvus Lite


def test_text_pipeline_trains_registers_and_promotes_an_adapter(tmp_path):
    table = write_text_table(tmp_path / "table.jsonl")
    cfg = load_config(None, [*TEXT_PARAMS, "ingest.source=text", f"ingest.input={table}",
                             f"text.cache_dir={tmp_path / 'cache'}", "drift.min_window=5",
                             f"drift.reference_dir={tmp_path / 'refs'}", f"drift.workspace={tmp_path / 'ws'}"])
    uri, milvus = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "milvus.db")
    version = run_local(config_yaml(cfg), uri, tmp_path / "kfp", "text", str(table), milvus)

    registry = mlflow.MlflowClient(uri, registry_uri=uri)  # not a registry URI another test set process-wide
    run = registry.get_run(registry.get_model_version("text-mrl", version).run_id)
    assert run.data.tags["mrl.kind"] == "text" and "ndcg_at_3_d384" in run.data.metrics
    per_dim = yaml.safe_load(latest_local_output(tmp_path / "kfp", "evaluate-op", "per_dim").read_text())
    assert {"ndcg_at_3", "truncated_ndcg_at_3", "pca_ndcg_at_3"} <= set(per_dim["64"])
    client = mi.connect(milvus)
    try:
        served = mi.alias_target(client, "items")
        assert served == f"items_v{version}" and mi.row_count(client, served) == 12  # the documents
    finally:
        client.close()

"""`mrl adapt`: an adapter of vectors the project did not make, from a file or from somebody else's Milvus collection,
registered and promoted through the usual gate and path, then served so that a base query vector finds its base
neighbours. Bad input is one line, exit 2, and changes nothing. Real MLflow (sqlite), Milvus Lite and the service."""

import json

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from helpers import one_line_error
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import load_config
from mrl.metrics import cosine_top_k
from mrl.retrieval import milvus_index as mi

pytestmark = pytest.mark.slow  # trains an adapter, registers it, promotes a collection (about a minute)

N, DIM = 1500, 32
FAST = ["--set", "adapt.epochs=3", "--set", "retrieval.candidate_k0=[50]", "--set", "retrieval.max_queries=100",
        "--set", "drift.calibration_draws=20"]


def clustered_vectors(seed: int = 0) -> np.ndarray:
    """Vectors whose information is spread over every dim (a random rotation of a decaying spectrum): truncation
    loses neighbours that the leading principal directions keep."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((30, DIM)) * np.linspace(3, 0.2, DIM)
    x = centers[rng.integers(0, 30, N)] + rng.standard_normal((N, DIM)) * np.linspace(1, 0.1, DIM)
    rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    return (x @ rotation).astype(np.float32)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapt")
    x = clustered_vectors()
    table = tmp / "catalogue.parquet"
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(N)], "embedding": [r.tolist() for r in x]}), table)
    stores = ["--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--milvus-uri", tmp / "milvus.db",
              "--set", f"drift.reference_dir={tmp}/references"]
    result = invoke("adapt", "--vectors", table, "--out", tmp / "out", "--summary", tmp / "summary.json", *stores,
                    *FAST)
    assert result.exit_code == 0, result.output
    return {"tmp": tmp, "x": x, "stores": stores, "output": result.output,
            "summary": json.loads((tmp / "summary.json").read_text())}


def test_the_adapter_keeps_the_full_dim_and_beats_truncation_below_it(adapted):
    per_dim = {int(m): row for m, row in adapted["summary"]["per_dim"].items()}
    assert sorted(per_dim) == [8, 16, 32]
    assert per_dim[32]["recall_at_10"] == pytest.approx(1.0, abs=1e-6)  # a rotation keeps every full-dim cosine
    for m in (8, 16):
        assert per_dim[m]["recall_at_10"] > per_dim[m]["truncated_recall_at_10"] + 0.03, (m, per_dim[m])
    assert "catalogue-mrl v1 (run " in adapted["output"] and "is champion" in adapted["output"]


def test_the_registered_adapter_says_what_it_adapts(adapted):
    tmp, summary = adapted["tmp"], adapted["summary"]
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("catalogue-mrl", "champion")
    tags = client.get_run(version.run_id).data.tags
    assert tags["mrl.kind"] == "vectors" and tags["mrl.adapts"] == "vectors" and tags["mrl.base_dim"] == str(DIM)
    assert tags["mrl.source"].endswith("catalogue.parquet") and tags["mrl.gate_metric"] == "recall_at_10"
    assert summary["promotion"]["collection"] == "catalogue_mrl_v1" and summary["gate"]["promoted"] is True


def test_the_service_passes_base_query_vectors_through_the_adapter(adapted):
    from mrl.service import create_app

    tmp, x = adapted["tmp"], adapted["x"]
    cfg = load_config(None, ["retrieval.collection_prefix=catalogue_mrl", "retrieval.serve_backend=memory"])
    client = mi.connect(str(tmp / "milvus.db"))
    try:
        assert mi.CollectionInfo.read(client, "catalogue_mrl_v1").adapts == "vectors"
        app_ = create_app(cfg, str(tmp / "milvus.db"), f"sqlite:///{tmp}/mlflow.db", tmp / "qlog", client=client,
                          reload_interval_s=0)
        with TestClient(app_) as http:
            for row in (3, 700, 1499):
                hits = http.post("/search", json={"vector": x[row].tolist(), "k": 10}).json()["results"]
                truth = [f"doc-{i}" for i in cosine_top_k(x[row:row + 1], x, 10)[0]]
                assert len({h["id"] for h in hits} & set(truth)) >= 9, (row, hits, truth)
        without_model = create_app(cfg, str(tmp / "milvus.db"), None, tmp / "qlog2", load_model=False, client=client,
                                   reload_interval_s=0)
        with TestClient(without_model) as http:
            refused = http.post("/search", json={"vector": x[3].tolist()})
            assert refused.status_code == 422 and "holds adapted vectors" in refused.json()["detail"]
    finally:
        client.close()


def test_a_milvus_collection_of_any_schema_is_read_by_its_named_fields(adapted, tmp_path):
    from pymilvus import DataType, MilvusClient

    client = mi.connect(str(tmp_path / "theirs.db"))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="COSINE")
    client.create_collection("their_docs", schema=schema, index_params=index)
    client.insert("their_docs", [{"pk": i, "vec": row.tolist()} for i, row in enumerate(adapted["x"][:600])])
    client.close()
    stores = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--milvus-uri", tmp_path / "ours.db",
              "--set", f"drift.reference_dir={tmp_path}/references"]
    wrong = invoke("adapt", "--collection", "their_docs", "--source-uri", tmp_path / "theirs.db", *stores, *FAST)
    one_line_error(wrong, "adapt.id_field: Milvus collection their_docs has no field 'id' (its fields: pk, vec)")
    done = invoke("adapt", "--collection", "their_docs", "--source-uri", tmp_path / "theirs.db", "--no-promote",
                  "--set", "adapt.id_field=pk", "--set", "adapt.vector_field=vec", "--out", tmp_path / "out",
                  *stores, *FAST)
    assert done.exit_code == 0, done.output
    assert "600 vectors of 32 dims from Milvus collection their_docs" in done.output
    assert "their_docs-mrl v1 (run " in done.output and "serving" not in done.output


def test_bad_input_is_one_line_and_changes_nothing(adapted, tmp_path):
    tmp, x = adapted["tmp"], adapted["x"]
    nan = x[:200].copy()
    nan[17, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": [[0.1, 0.2], [0.3]]}), tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"key": ["a"], "embedding": [[0.1, 0.2]]}), tmp_path / "no_id.parquet")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.save(tmp_path / "small.npy", x[:300])
    before = mi.alias_target(mi.connect(str(tmp / "milvus.db")), "catalogue_mrl")
    for args, says in [
        ([], "adapt: give exactly one of --collection or --vectors"),
        (["--vectors", tmp_path / "nan.npy"], "1 vectors hold NaN or infinite values (first: id '17')"),
        (["--vectors", tmp_path / "ragged.parquet"], "'embedding': vectors of different dimensions [1, 2]"),
        (["--vectors", tmp_path / "no_id.parquet"], "adapt.id_field: " + str(tmp_path / "no_id.parquet")
         + " has no column 'id' (it has: key, embedding)"),
        (["--vectors", tmp_path / "junk.npz"], "junk.npz: not a readable vectors file"),
        (["--vectors", tmp_path / "missing.npy"], "missing.npy: file not found"),
        (["--collection", "nope"], "Milvus collection nope does not exist"),
        (["--vectors", tmp_path / "small.npy", "--set", "adapt.nesting_dims=[8,64]"],
         "adapt.nesting_dims: largest dim 64 exceeds the vectors' 32 dims"),
    ]:
        one_line_error(invoke("adapt", *args, *adapted["stores"], "--alias", "catalogue_mrl",
                              "--model-name", "catalogue-mrl", *FAST), says)
    client = mi.connect(str(tmp / "milvus.db"))
    assert mi.alias_target(client, "catalogue_mrl") == before == "catalogue_mrl_v1"
    client.close()
    uri = f"sqlite:///{tmp}/mlflow.db"
    registry = mlflow.MlflowClient(uri, registry_uri=uri)  # not the process-wide registry the commands set
    assert str(registry.get_model_version_by_alias("catalogue-mrl", "champion").version) == "1"
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.get_model_version("catalogue-mrl", "2")  # nothing was registered

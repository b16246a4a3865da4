"""A text adapter as a first-class model, end to end through the CLI on a tiny table embedded by the real MiniLM:
ingest -> validate -> train -> evaluate -> register --gate (the gate compares nDCG@k) -> promote the documents to
Milvus Lite (funnel chosen and verified with the held-out queries) -> `mrl search --text` on the served index ->
`POST /search {"text": ...}`; and a text query of an image index (or an image of a text index) as a clear 4xx."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import TEXT_PARAMS, TEXT_WORDS, invoke, ok, one_line_error, write_text_table

from mrl.config import load_config
from mrl.errors import MRLError
from mrl.retrieval import milvus_index as mi

pytestmark = pytest.mark.slow  # MiniLM, MLflow model logging, Milvus Lite

NAME = "text-mrl"
WORDS, PARAMS = TEXT_WORDS, TEXT_PARAMS
@pytest.fixture(scope="module")
def text_index(tmp_path_factory):
    """The whole text path through the CLI, once: each command's printed lines, and where everything is."""
    tmp = tmp_path_factory.mktemp("text-serving")
    write_text_table(tmp / "table.jsonl")
    uri, milvus = f"sqlite:///{tmp / 'mlflow.db'}", str(tmp / "milvus.db")
    sets = [a for p in [*PARAMS, f"text.cache_dir={tmp / 'cache'}"] for a in ("--set", p)]
    store = ["--tracking-uri", uri]
    index = [*store, "--milvus-uri", milvus]
    data, model, metrics = tmp / "text.npz", tmp / "adapter.pt", tmp / "metrics.json"
    out = {"tmp": tmp, "uri": uri, "milvus": milvus, "data": data, "model": model, "sets": sets, "index": index}
    out["ingest"] = ok(invoke("ingest", "--source", "text", "--input", tmp / "table.jsonl", "--output", data, *sets))
    out["validate"] = ok(invoke("validate", "--data", data, *sets))
    ok(invoke("train", "--data", data, "--out", model, *sets))
    ok(invoke("evaluate", "--model", model, "--data", data, "--metrics-out", metrics, *sets))
    out["model", "register"] = ok(invoke("model", "register", "--model", model, "--metrics", metrics, "--gate", "--out",
                                tmp / "registration.json", *store, *sets))
    out["index", "promote"] = ok(invoke("index", "promote", "--data", data, "--out", tmp / "promotion.json", *index, *sets))
    return out


def test_register_gates_on_ndcg_and_logs_a_module_over_base_embeddings(text_index):
    from mrl.text.adapter import apply_adapter, load_adapter
    from mrl.text.artifact import load_text_dataset

    assert text_index["validate"][-1].startswith("validation passed: ")
    assert text_index["model", "register"][-1] == f"{NAME} v1 is champion (and challenger)"
    c = mlflow.MlflowClient(text_index["uri"])
    version = c.get_model_version(NAME, "1")
    # registry.primary_metric is the image default knn_top1: a text adapter is gated on its nDCG@k (text.eval_k = 3)
    assert "ndcg_at_3 >= floor 0.3 at every dim" in version.description
    # ...and `mrl model compare` compares the same metric without being told
    compared = ok(invoke("model", "compare", "--plot", text_index["tmp"] / "cmp.png", *text_index["sets"],
                         "--tracking-uri", text_index["uri"]))
    assert compared[0].startswith(f"{NAME} ndcg_at_3: champion v1 vs challenger v1")
    tags = c.get_run(version.run_id).data.tags
    td = load_text_dataset(text_index["data"])
    assert (tags["mrl.kind"], json.loads(tags["mrl.item_shape"]), json.loads(tags["mrl.nesting_dims"])) == (
        "text", [384], [8, 64, 384])
    assert (tags["mrl.text_model"], tags["mrl.text_model_key"]) == (td.model, td.model_key)
    # models:/ gives a module from base embeddings (float32, 384) to the adapter's: what promotion embeds with
    mlflow.set_registry_uri(text_index["uri"])
    module = mlflow.pytorch.load_model(f"models:/{NAME}/1")
    base = td.query_x[:5]
    expected = apply_adapter(load_adapter(text_index["model"]).adapter, base)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(base)).numpy(), expected, atol=1e-5)


def test_promote_indexes_the_documents_and_verifies_with_the_held_out_queries(text_index):
    record = json.loads((text_index["tmp"] / "promotion.json").read_text())
    assert (record["collection"], record["previous"], record["rows"]) == ("items_v1", None, len(WORDS))
    assert record["verify_recall"] >= 0.9
    # chosen on the 12 held-out (test-split) queries over every document: none of them is a catalogue item
    assert any(f"on {len(WORDS)} held-out queries over {len(WORDS)} of {len(WORDS)} items" in line
               for line in text_index["index", "promote"])
    client = mi.connect(text_index["milvus"])
    try:
        stored = {r["id"]: r["text"] for r in client.query("items_v1", filter="", output_fields=["text"], limit=100)}
    finally:
        client.close()
    assert stored == {word: word for word in WORDS}  # each document's text, served with its hits


def test_search_text_on_the_served_index(text_index):
    lines = ok(invoke("search", "--text", "musical instrument with black and white keys", "--k", "3",
                      *text_index["index"], *text_index["sets"]))
    header = next(i for i, line in enumerate(lines) if "neighbours of 'musical instrument" in line)
    assert lines[header].startswith("items_v1 (model v1, funnel ")
    assert lines[header + 1].split()[:2] == ["1.", "piano"] and lines[header + 1].endswith("  piano")  # its text
    assert lines[-1].startswith("  timings: ")
    # the dataset file's exact search still works beside it
    lines = ok(invoke("search", "--text", "musical instrument with black and white keys", "--data", text_index["data"],
                      "--model", text_index["model"], "--dim", "64", "--k", "3", *text_index["sets"]))
    assert "  1. piano " in "\n".join(lines)
    # an image of a text index, and bad combinations: one line each
    image = text_index["tmp"] / "q.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    one_line_error(invoke("search", "--image", image, *text_index["index"], *text_index["sets"]),
                   f"{image}: the served index was built by text-mrl v1, which embeds text, not images; search it by text")
    one_line_error(invoke("search", "--text", "a pet", "--dim", "8", *text_index["index"]),
                   "--model and --dim go with --data")
    one_line_error(invoke("search", "--text", " ", *text_index["index"], *text_index["sets"]),
                   "--text: the query is empty")


@pytest.fixture
def service(text_index, tmp_path):
    from mrl.service import create_app

    cfg = load_config(None, PARAMS)
    client = mi.connect(text_index["milvus"])
    app_ = create_app(cfg, text_index["milvus"], text_index["uri"], tmp_path / "qlog", client=client)
    with TestClient(app_) as http:
        yield http, tmp_path / "qlog"
    client.close()


def test_post_search_with_text(service):
    http, qlog = service
    ready = http.get("/readyz").json()
    assert ready["collection"] == "items_v1" and ready["text_search"] is True and ready["thumbnails"] is False
    found = http.post("/search", json={"text": "musical instrument with black and white keys", "k": 3}).json()
    assert (found["results"][0]["id"], found["results"][0]["text"]) == ("piano", "piano")
    assert len(found["results"]) == 3 and found["model_version"] == "1"
    by_id = http.post("/search", json={"id": "river", "k": 2}).json()  # ids and vectors work as for any index
    assert by_id["results"][0] == {"id": "river", "score": pytest.approx(1.0, abs=1e-3), "label": "",
                                   "text": "river"}
    for body, message in [({"text": ""}, "text: the query is empty"),
                          ({"text": "x" * 10_001}, "at most 10,000"),
                          ({"image": "bm90IGFuIGltYWdl"}, "image: the served index was built by text-mrl v1, which embeds"),
                          ({"text": "a pet", "index": "videos"}, "text: searches the items index"),
                          ({"text": "a pet", "id": "cat"}, "exactly one of vector, id, image, clip, text")]:
        response = http.post("/search", json=body)
        assert response.status_code == 422 and message in str(response.json()["detail"]), (body, response.json())
    metrics = http.get("/metrics").text
    assert 'mrl_search_requests_total{kind="text",status="200"} 1.0' in metrics
    http.__exit__(None, None, None)  # flushes the query log
    logged = np.concatenate([np.load(p) for p in sorted(qlog.glob("queries-*.npy"))])
    assert logged.shape == (1, 384)  # the text query's adapter embedding; the search by id is not logged


def test_a_text_query_of_an_image_index_is_a_422(tiny_models, tmp_path):
    from helpers import SERVICE_PARAMS

    from mrl.promote import promote_index
    from mrl.service import create_app

    setup = tiny_models.register(tmp_path, seeds=[0])
    mlflow.MlflowClient(setup["uri"]).set_registered_model_alias(setup["cfg"].registry.model_name, "champion", "1")
    milvus = str(tmp_path / "milvus.db")
    promote_index(setup["cfg"], setup["data"], setup["uri"], milvus, log=lambda _: None)
    client = mi.connect(milvus)
    try:
        with TestClient(create_app(load_config(None, SERVICE_PARAMS), milvus, setup["uri"], tmp_path / "qlog",
                                   client=client)) as http:
            response = http.post("/search", json={"text": "a sandal"})
            assert response.status_code == 422
            wrong = "text: the served index was built by fashion-mnist-mrl v1, which embeds images, not text"
            assert wrong in response.json()["detail"]
            assert http.get("/readyz").json()["text_search"] is False
    finally:
        client.close()
    one_line_error(invoke("search", "--text", "a sandal", "--tracking-uri", setup["uri"], "--milvus-uri", milvus),
                   "--text: the served index was built by fashion-mnist-mrl v1, which embeds images")


def test_the_gate_refuses_a_text_adapter_against_an_image_champion(tiny_models, text_index, tmp_path):
    from mrl.registry import aliases, promote_if_better, register_run

    setup = tiny_models.register(tmp_path, seeds=[0])
    cfg = setup["cfg"].registry
    mlflow.MlflowClient(setup["uri"]).set_registered_model_alias(cfg.model_name, "champion", "1")
    registration = register_run(text_index["model"], text_index["tmp"] / "metrics.json", None, cfg, setup["uri"])
    with pytest.raises(MRLError, match=f"{cfg.model_name} v2 embeds text but champion v1 embeds images: register "
                                       "each kind under its own registry.model_name"):
        promote_if_better(cfg.model_name, cfg, registration.version, setup["uri"])
    assert aliases(cfg.model_name, setup["uri"]) == {"champion": "1", "challenger": "2"}

"""Index promotion and the search service against real Milvus Lite, MLflow on sqlite and tiny trained models."""

import base64
import functools
import inspect
import io
import json
import threading
import time
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from helpers import SERVICE_PARAMS, SMALL_PARAMS
from PIL import Image

from mrl import promote as promote_mod
from mrl.config import IngestConfig, load_config
from mrl.errors import MRLError
from mrl.ingest import ingest
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.lifecycle import rollback_index

PARAMS = SERVICE_PARAMS


pytestmark = pytest.mark.slow  # Milvus Lite, MLflow model loading and a funnel choice per promotion


@pytest.fixture(scope="module")
def setup(tiny_models, tmp_path_factory):
    """The shared tiny dataset and three registered versions of the shared tiny models (seeds 0, 1, 2), in a store
    of this module's own."""
    return tiny_models.register(tmp_path_factory.mktemp("index"))


@pytest.fixture
def milvus(setup, tmp_path):
    """A fresh Milvus Lite data file per test."""
    client = mi.connect(str(tmp_path / "milvus.db"))
    yield client, str(tmp_path / "milvus.db")
    client.close()


def set_champion(setup, version: str) -> None:
    mlflow.MlflowClient(setup["uri"]).set_registered_model_alias(setup["cfg"].registry.model_name, "champion", version)


def promote(setup, client, version, cfg=None, **kw):
    set_champion(setup, version)
    return promote_mod.promote_index(cfg or setup["cfg"], setup["data"], setup["uri"], kw.pop("uri"), log=lambda _: None,
                                     **kw)


def test_promote_verifies_swaps_and_rolls_back(setup, milvus):
    client, uri = milvus
    first = promote(setup, client, "1", uri=uri)
    assert (first.collection, first.previous, first.rows) == ("items_v1", None, 320)
    assert first.verify_recall >= 0.9 and mi.alias_target(client, "items") == "items_v1"
    tags = mlflow.MlflowClient(setup["uri"]).get_model_version(setup["cfg"].registry.model_name, "1").tags
    assert "mrl.funnel" in tags and float(tags["mrl.funnel_recall"]) >= 0.9  # chosen funnel recorded with the model

    second = promote(setup, client, "2", uri=uri)
    assert (second.collection, second.previous) == ("items_v2", "items_v1")
    assert mi.alias_target(client, "items") == "items_v2"
    assert rollback_index(setup["cfg"], uri) == ("items_v2", "items_v1")
    assert mi.alias_target(client, "items") == "items_v1"
    with pytest.raises(MRLError, match="no previous collection"):
        rollback_index(setup["cfg"], uri)


def test_milvus_and_in_memory_backends_answer_alike(setup, milvus):
    """One interface, two backends: with an exact (FLAT) shortlist both must return the same neighbours."""
    from mrl.data import load_dataset
    from mrl.retrieval import ReferenceFunnelIndex
    from mrl.retrieval.backends import open_served_index

    client, uri = milvus
    cfg = load_config(None, [*PARAMS, "retrieval.serve_backend=milvus"])
    promote(setup, client, "1", cfg=cfg, uri=uri)
    served = open_served_index(cfg.retrieval, uri, client)
    ds = load_dataset(setup["data"])
    stored = {r["id"]: r["full"] for r in client.query(served.name, filter="", output_fields=["full"], limit=1000)}
    reference = ReferenceFunnelIndex(np.array([stored[i] for i in ds.ids]), ds.ids, [ds.classes[y] for y in ds.labels],
                                    served.info.funnel)
    queries = np.stack([reference.vector_of(i) for i in ds.ids[-20:]])
    ours, _ = served.search(queries, 5)
    theirs, _ = reference.search(queries, 5)
    overlap = np.mean([len({h["id"] for h in a} & {h["id"] for h in b}) / 5 for a, b in zip(ours, theirs)])
    assert overlap >= 0.95  # identical up to ties between equal scores
    assert [h["label"] for h in ours[0]] == [h["label"] for h in theirs[0]]


def test_memory_backend_reads_the_collection_and_answers_like_the_exact_reference(setup, milvus):
    """The default backend for Milvus Lite: the promoted collection read back from Milvus, searched in process."""
    from mrl.data import load_dataset
    from mrl.retrieval import ReferenceFunnelIndex
    from mrl.retrieval.backends import open_served_index
    from mrl.retrieval.memory_index import MemoryFunnelIndex

    client, uri = milvus
    promote(setup, client, "1", uri=uri)
    served = open_served_index(setup["cfg"].retrieval, uri, client)
    assert isinstance(served, MemoryFunnelIndex) and served.name == "items_v1"
    ds = load_dataset(setup["data"])
    assert sorted(served.ids) == sorted(ds.ids)  # every row came back from Milvus
    stored = {r["id"]: r["full"] for r in client.query("items_v1", filter="", output_fields=["full"], limit=1000)}
    reference = ReferenceFunnelIndex(np.array([stored[i] for i in ds.ids]), ds.ids, [ds.classes[y] for y in ds.labels],
                                    served.info.funnel)
    queries = np.stack([reference.vector_of(i) for i in ds.ids[-20:]])
    ours, timings = served.search(queries, 5)
    assert any(stage.startswith("shortlist_d") for stage in timings)
    theirs, _ = reference.search(queries, 5)
    overlap = np.mean([len({h["id"] for h in a} & {h["id"] for h in b}) / 5 for a, b in zip(ours, theirs)])
    assert overlap >= 0.95  # identical up to ties and float16 storage
    assert [h["label"] for h in ours[0]] == [h["label"] for h in theirs[0]]
    np.testing.assert_allclose(served.vector_of(ds.ids[0]), stored[ds.ids[0]], rtol=1e-3, atol=1e-3)  # float16
    assert served.bytes_per_item() >= 2 * 16  # the float16 re-rank table at least
    with pytest.raises(MRLError, match="unknown item id"):
        served.vector_of("no-such-item")


def test_the_milvus_backend_refuses_a_quantized_shortlist_with_a_clear_error(milvus):
    from mrl.retrieval.backends import open_index
    from mrl.retrieval.funnel import Funnel

    client, _ = milvus
    info = mi.CollectionInfo("items_v1", "x", "1", Funnel(8, 60, (16,), 4, "int8"), [4, 8, 16], 10, None)
    mi.create_collection(client, info, 16, "FLAT", 16, 100)
    retrieval = load_config(None, PARAMS).retrieval
    with pytest.raises(MRLError, match="int8 shortlist, which only retrieval.serve_backend=memory serves"):
        open_index(client, "items_v1", retrieval, "milvus")


def test_hnsw_shortlist(setup, milvus):
    """The production default. The tiny synthetic set is full of near-ties, so only a loose recall bar here;
    bench/retrieval.py measures HNSW recall on real embeddings."""
    client, uri = milvus
    set_champion(setup, "1")
    cfg = load_config(None, [*PARAMS, "retrieval.index_type=HNSW", "retrieval.target_recall=0.5"])
    result = promote_mod.promote_index(cfg, setup["data"], setup["uri"], uri, log=lambda _: None)
    assert result.verify_recall >= 0.5 and mi.alias_target(client, "items") == "items_v1"


def test_old_collections_beyond_keep_last_are_dropped(setup, milvus):
    client, uri = milvus
    cfg = load_config(None, [*PARAMS, "retrieval.drop_grace_s=0"])  # no replica to wait for: drop at once
    for version in ("1", "2", "3"):
        result = promote(setup, client, version, cfg=cfg, uri=uri)
    assert result.dropped == ["items_v1"]
    assert mi.versioned_collections(client, "items") == ["items_v2", "items_v3"]


@pytest.mark.parametrize("step", ["create_collection", "insert_rows", "verify_collection", "swap_alias"])
def test_a_failure_at_any_step_leaves_the_alias_and_the_old_collection(setup, milvus, monkeypatch, step):
    client, uri = milvus
    promote(setup, client, "1", uri=uri)
    before = mi.row_count(client, "items_v1")

    def boom(*args, **kwargs):
        raise RuntimeError(f"injected failure in {step}")

    monkeypatch.setattr(promote_mod if step == "verify_collection" else mi, step, boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        promote(setup, client, "2", uri=uri)
    assert mi.alias_target(client, "items") == "items_v1"
    assert mi.row_count(client, "items_v1") == before
    assert "items_v2" not in client.list_collections(), "the partial collection must be cleaned up"
    assert mi.lock_holder(client, "items") is None, "a failed promotion releases its lock"


def test_a_promotion_waits_for_the_lock_and_never_overwrites_a_moved_alias(setup, milvus):
    client, uri = milvus
    promote(setup, client, "1", uri=uri)
    mi.acquire_promotion_lock(client, "items", "items_v9")  # another promotion, e.g. a KFP run between its steps
    with pytest.raises(MRLError, match=r"another promotion \(items_v9 on .*\) holds the promotion lock"):
        promote(setup, client, "2", uri=uri)
    with pytest.raises(MRLError, match=r"a promotion \(items_v9\) is running"):
        rollback_index(setup["cfg"], uri)
    assert mi.alias_target(client, "items") == "items_v1" and "items_v2" not in client.list_collections()
    mi.release_promotion_lock(client, "items", "items_v9")

    # A plan made before the alias moved (a stale KFP plan, or a rollback that ran meanwhile) must not swap it back.
    set_champion(setup, "2")
    plan = promote_mod.plan_promotion(setup["cfg"], setup["data"], setup["uri"], uri, None, log=lambda _: None)
    partial = promote_mod.insert_shard(setup["cfg"], plan, setup["data"], setup["uri"], uri, 0, 1)
    client.create_alias(collection_name="items_v1", alias="elsewhere")  # an unrelated alias: no effect
    orphan = mi.CollectionInfo("items_v7", "x", "7", promote_mod.mi.Funnel(4, 20, (16,)), [4, 8, 16], 10, None)
    mi.create_collection(client, orphan, 16, "FLAT", 16, 100)
    client.alter_alias(collection_name="items_v7", alias="items")  # moved behind the plan's back
    with pytest.raises(MRLError, match="now points at items_v7, not items_v1"):
        try:
            promote_mod.finish_promotion(setup["cfg"], plan, setup["data"], setup["uri"], uri, [partial],
                                         log=lambda _: None)
        except BaseException:
            promote_mod.abandon_promotion(setup["cfg"], plan, uri)
            raise
    assert mi.alias_target(client, "items") == "items_v7"
    assert "items_v2" not in client.list_collections() and mi.lock_holder(client, "items") is None


def test_of_promotions_starting_together_exactly_one_takes_the_lock(milvus):
    import threading

    client, _ = milvus

    def take(owner, barrier, outcomes):
        barrier.wait()
        try:
            mi.acquire_promotion_lock(client, "items", owner)
            outcomes[owner] = "held"
        except MRLError:
            outcomes[owner] = "refused"

    for attempt in range(5):
        barrier, outcomes = threading.Barrier(2), {}
        threads = [threading.Thread(target=take, args=(f"items_v{attempt}{i}", barrier, outcomes)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes.values()) == ["held", "refused"], outcomes
        winner = next(o for o, v in outcomes.items() if v == "held")
        assert mi.lock_holder(client, "items")["owner"] == winner
        mi.release_promotion_lock(client, "items", winner)


def test_of_two_promotions_started_together_one_swaps_and_the_other_leaves_nothing(setup, milvus, monkeypatch):
    """Two whole promotions (v2 and v3) reach for the lock at the same moment: one builds, verifies and swaps; the
    other stops with a clear error, having built nothing, and succeeds when run again afterwards."""
    client, uri = milvus
    promote(setup, client, "1", uri=uri)
    barrier, take_lock = threading.Barrier(2, timeout=120), mi.acquire_promotion_lock

    def together(*args, **kwargs):  # both promotions checked their inputs and connected: take the lock at once
        barrier.wait()
        return take_lock(*args, **kwargs)

    monkeypatch.setattr(mi, "acquire_promotion_lock", together)
    outcomes = {}

    def run(version):
        try:
            outcomes[version] = promote_mod.promote_index(setup["cfg"], setup["data"], setup["uri"], uri, version,
                                                          log=lambda _: None)
        except MRLError as e:
            outcomes[version] = e

    threads = [threading.Thread(target=run, args=(v,)) for v in ("2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(outcomes) == ["2", "3"], outcomes
    [winner] = [v for v, o in outcomes.items() if not isinstance(o, MRLError)]
    [loser] = [v for v, o in outcomes.items() if isinstance(o, MRLError)]
    assert "promotion lock" in str(outcomes[loser])
    assert (outcomes[winner].collection, outcomes[winner].previous) == (f"items_v{winner}", "items_v1")
    assert mi.alias_target(client, "items") == f"items_v{winner}" and mi.row_count(client, f"items_v{winner}") == 320
    assert f"items_v{loser}" not in client.list_collections() and mi.lock_holder(client, "items") is None

    monkeypatch.setattr(mi, "acquire_promotion_lock", take_lock)
    again = promote_mod.promote_index(setup["cfg"], setup["data"], setup["uri"], uri, loser, log=lambda _: None)
    assert (again.collection, again.previous) == (f"items_v{loser}", f"items_v{winner}")


def test_a_failed_shard_abandons_the_promotion_and_leaves_the_served_index(setup, milvus, monkeypatch, tmp_path):
    """The KFP promotion's insert step (components/promote.py) as the pipeline runs it, over two shards: the first
    goes in, the second fails; the step drops the half-filled collection and its drift reference and releases the
    lock, so the alias keeps serving the old collection and the next promotion starts clean."""
    from components.promote import insert_shard_op
    from mrl.drift.reference import reference_path

    client, uri = milvus
    small_drift = [f"drift.{k}={v}" for k, v in SMALL_PARAMS["drift"].items()]  # a reference from 320 rows
    cfg = load_config(None, [*PARAMS, *small_drift, f"drift.reference_dir={tmp_path / 'refs'}"])
    promote(setup, client, "1", cfg=cfg, uri=uri)
    set_champion(setup, "2")
    plan = promote_mod.plan_promotion(cfg, setup["data"], setup["uri"], uri, None, log=lambda _: None)
    assert reference_path(cfg, "items_v2").exists() and mi.lock_holder(client, "items")["owner"] == "items_v2"
    catalogue = tmp_path / "catalogue.npy"
    np.save(catalogue, np.empty((0, 0), np.float32))  # no catalogue from the plan: each shard embeds its rows
    artifacts = {"dataset": SimpleNamespace(path=str(setup["data"])), "embeddings": SimpleNamespace(path=str(catalogue))}
    takes = inspect.signature(insert_shard_op.python_func).parameters

    def insert_step(shard):
        work = json.dumps({"plan": plan.to_json(), "shard": shard, "shards": 2})
        insert_shard_op.python_func(params_yaml=yaml.safe_dump(cfg.model_dump(mode="json")), tracking_uri=setup["uri"],
                                    milvus_uri=uri, work=work, top_k=SimpleNamespace(path=str(tmp_path / f"top{shard}")),
                                    **{k: v for k, v in artifacts.items() if k in takes})

    insert_step(0)
    assert json.loads((tmp_path / "top0").read_text())["ids"] and "items_v2" in client.list_collections()

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure in shard 2")

    insert_rows = mi.insert_rows
    monkeypatch.setattr(mi, "insert_rows", boom)
    with pytest.raises(RuntimeError, match="injected failure in shard 2"):
        insert_step(1)
    assert mi.alias_target(client, "items") == "items_v1" and mi.row_count(client, "items_v1") == 320
    assert "items_v2" not in client.list_collections() and mi.lock_holder(client, "items") is None
    assert not reference_path(cfg, "items_v2").exists() and reference_path(cfg, "items_v1").exists()
    monkeypatch.setattr(mi, "insert_rows", insert_rows)
    assert promote(setup, client, "2", cfg=cfg, uri=uri).collection == "items_v2"


def test_a_collection_left_by_a_killed_promotion_is_rebuilt(setup, milvus):
    client, uri = milvus
    promote(setup, client, "1", uri=uri)
    # What a kill mid-insert leaves: a half-filled items_v2 that the alias never pointed at.
    orphan = mi.CollectionInfo("items_v2", "x", "2", promote_mod.mi.Funnel(4, 20, (16,)), [4, 8, 16], 10, None)
    mi.create_collection(client, orphan, 16, "FLAT", 16, 100)
    junk = {"id": "junk", "label": "", "short": np.ones(4, np.float32), "full": np.ones(16, np.float32)}
    client.insert("items_v2", [junk])
    result = promote(setup, client, "2", uri=uri)
    assert result.rows == 320 and mi.row_count(client, "items_v2") == 320


def test_promote_refuses_data_the_model_cannot_embed(setup, milvus, embeddings_table, tmp_path):
    client, uri = milvus
    vectors = ingest("embeddings", embeddings_table, tmp_path / "vec.npz", IngestConfig()).path
    set_champion(setup, "1")
    with pytest.raises(MRLError, match="but fashion-mnist-mrl v1 embeds images"):
        promote_mod.promote_index(setup["cfg"], vectors, setup["uri"], uri, log=lambda _: None)
    assert client.list_collections() == []


# --- the service ---------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "milvus"])
def service(request, setup, milvus, tmp_path, monkeypatch):
    """The service over each backend (the promotion chooses among funnels that backend can serve)."""
    from mrl.service import create_app

    client, uri = milvus
    cfg = load_config(None, [*PARAMS, f"retrieval.serve_backend={request.param}"])
    promote_with = functools.partial(promote, cfg=cfg, uri=uri)
    promote_with(setup, client, "1")
    monkeypatch.setenv("MRL_ADMIN_TOKEN", "s3cret")
    app = create_app(cfg, uri, setup["uri"], tmp_path / "qlog", client=client)
    with TestClient(app) as http:
        yield http, client, promote_with, tmp_path / "qlog"


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_search_by_id_vector_and_image(service, setup):
    http, client, _, _ = service
    by_id = http.post("/search", json={"id": "fmnist-test-00003", "k": 5}).json()
    assert by_id["results"][0]["id"] == "fmnist-test-00003"  # an item is its own nearest neighbour
    assert len(by_id["results"]) == 5 and by_id["collection"] == "items_v1"
    assert "total" in by_id["timings_ms"] and any(t.startswith("shortlist_d") for t in by_id["timings_ms"])
    vector = mi.MilvusFunnelIndex(client, "items_v1").vector_of("fmnist-test-00003").tolist()
    by_vector = http.post("/search", json={"vector": vector, "k": 5}).json()
    assert [r["id"] for r in by_vector["results"]] == [r["id"] for r in by_id["results"]]

    from mrl.data import load_dataset

    ds = load_dataset(setup["data"])
    row = int(np.flatnonzero(ds.ids == "fmnist-test-00003")[0])
    by_image = http.post("/search", json={"image": png_base64(ds.x[row, 0]), "k": 5}).json()
    assert by_image["results"][0]["id"] == "fmnist-test-00003"
    assert by_image["results"][0]["label"] == str(ds.classes[ds.labels[row]])


@pytest.mark.parametrize("body, status, message", [
    ({"vector": [0.1] * 15}, 422, "expected 16 values, got 15"),
    ('{"vector": [' + "0.1, " * 15 + "NaN]}", 422, "NaN or infinite"),  # JSON as some clients send it
    ({"id": "fmnist-test-00003", "k": 0}, 422, "k: must be between 1 and 100"),
    ({"id": "fmnist-test-00003", "k": 1000}, 422, "k: must be between 1 and 100"),
    ({"id": "no-such-item"}, 404, "unknown item id 'no-such-item'"),
    ({"image": "bm90IGFuIGltYWdl"}, 422, "image: not a readable image"),
    ({"image": "%%%"}, 422, "image: not valid base64"),
    ({"id": "a", "vector": [1.0]}, 422, "exactly one of vector, id, image"),
    ({}, 422, "exactly one of vector, id, image"),
    ({"id": "fmnist-test-00003", "index": "videos", "exact": True}, 422, "the explorer searches the items index only"),
])
def test_bad_requests_get_a_4xx_with_a_clear_message(service, body, status, message):
    http = service[0]
    response = (http.post("/search", content=body, headers={"content-type": "application/json"})
                if isinstance(body, str) else http.post("/search", json=body))
    assert response.status_code == status
    assert message in str(response.json()["detail"])


def test_health_readiness_metrics_and_query_log(service):
    http, _, _, qlog = service
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["collection"] == "items_v1" and ready["model_version"] == "1"
    assert ready["backend"] in ("MemoryFunnelIndex", "MilvusFunnelIndex")
    if ready["backend"] == "MemoryFunnelIndex":
        assert ready["items"] == 320 and ready["bytes_per_item"] >= 32
    for _ in range(3):
        http.post("/search", json={"id": "fmnist-test-00001"})
    for _ in range(2):
        http.post("/search", json={"vector": [0.25] * 16})
    metrics = http.get("/metrics").text
    assert 'mrl_search_requests_total{kind="id",status="200"} 3.0' in metrics
    assert "mrl_search_latency_seconds_bucket" in metrics
    http.__exit__(None, None, None)  # the log flushes at shutdown, every 1000 rows, or when a minute old
    logged = np.concatenate([np.load(p) for p in sorted(qlog.glob("queries-*.npy"))])
    assert logged.shape == (2, 16)  # the external queries only: a search by id repeats a catalogue vector


def test_the_query_log_writes_a_quiet_window_once_it_is_old(tmp_path):
    from mrl.service.query_log import QueryLog

    log = QueryLog(tmp_path / "qlog", max_age_s=0.2)
    log.append(np.ones((2, 4)))
    log.flush_if_stale()
    assert not list((tmp_path / "qlog").glob("*.npy"))  # young: still buffered
    time.sleep(0.3)
    log.flush_if_stale()
    assert np.load(next((tmp_path / "qlog").glob("queries-*.npy"))).shape == (2, 4)


def test_the_service_writes_a_quiet_replicas_queries_without_a_shutdown(setup, milvus, tmp_path):
    from mrl.service import create_app

    client, uri = milvus
    promote(setup, client, "1", uri=uri)
    app = create_app(setup["cfg"], uri, setup["uri"], tmp_path / "qlog", load_model=False, client=client,
                     query_log_max_age_s=0.2)
    with TestClient(app) as http:
        assert http.post("/search", json={"vector": [0.25] * 16}).status_code == 200
        deadline = time.monotonic() + 10
        while not list((tmp_path / "qlog").glob("queries-*.npy")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(np.load(next((tmp_path / "qlog").glob("queries-*.npy")))) == 1  # written while still serving


def test_admin_reload_needs_the_token_and_picks_up_a_new_index(service, setup):
    http, client, promote_with, _ = service
    assert http.post("/admin/reload").status_code == 401
    assert http.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    promote_with(setup, client, "2")
    assert http.get("/readyz").json()["collection"] == "items_v1"  # serving what it loaded until told
    reloaded = http.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
    assert reloaded.status_code == 200 and reloaded.json() == {"collection": "items_v2", "model_version": "2"}
    assert http.post("/search", json={"id": "fmnist-test-00001"}).json()["collection"] == "items_v2"


def test_item_thumbnails_the_search_page_and_offline_api_docs(service, setup):
    http = service[0]
    from mrl.data import load_dataset

    ds = load_dataset(setup["data"])
    row = int(np.flatnonzero(ds.ids == "fmnist-test-00003")[0])
    response = http.get("/items/fmnist-test-00003/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert np.array_equal(np.array(Image.open(io.BytesIO(response.content))), ds.x[row, 0])  # the item, 28x28
    assert http.get("/items/no-such-item/thumbnail").status_code == 404
    assert http.get("/readyz").json()["thumbnails"] is True

    page = http.get("/")
    assert page.status_code == 200 and "<title>mrl search</title>" in page.text
    for docs, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = http.get(docs).text
        assert f"/static-offline-docs/{asset}" in html and "cdn.jsdelivr.net" not in html  # no internet needed
        assert http.get(f"/static-offline-docs/{asset}").status_code == 200


def test_the_explorer_compares_any_funnel_with_exact_search(service, setup):
    http, _, _, qlog = service
    if http.get("/readyz").json()["backend"] != "MemoryFunnelIndex":
        refused = http.post("/search", json={"id": "fmnist-test-00003", "funnel": {"d0": 4, "k0": 20}})
        assert refused.status_code == 422 and "needs the memory backend" in refused.json()["detail"]
        return
    vector = http.post("/search", json={"id": "fmnist-test-00003", "k": 1}).json()  # warm; by id: not logged
    served = http.post("/search", json={"id": "fmnist-test-00003", "k": 10, "exact": True}).json()
    exact = [h["id"] for h in served["exact"]["results"]]
    assert exact[0] == "fmnist-test-00003" and len(exact) == 10 and served["exact"]["ms"] > 0
    found = {h["id"] for h in served["results"]}
    assert served["exact"]["recall"] == pytest.approx(len(found & set(exact)) / 10)

    full = http.post("/search", json={"id": "fmnist-test-00003", "funnel": {"d0": 16, "k0": 10}, "exact": True}).json()
    assert full["funnel"] == "16@10" and [h["id"] for h in full["results"]] == exact  # a full-dim scan is exact
    assert full["exact"]["recall"] == 1.0
    narrow = http.post("/search", json={"id": "fmnist-test-00003", "funnel": {"d0": 4, "k0": 10}, "exact": True}).json()
    assert narrow["funnel"] == "4@10 -> 16" and "scan_d4" in narrow["timings_ms"]
    assert narrow["exact"]["recall"] <= full["exact"]["recall"]

    vector = http.post("/search", json={"vector": [0.25] * 16, "funnel": {"d0": 8, "k0": 40}})
    assert vector.status_code == 200
    for body, message in (({"d0": 5, "k0": 20}, "funnel.d0: 5 is not one of the model's nesting dims"),
                          ({"d0": 4, "k0": 5}, "funnel.k0: must be between k (10) and 10000, got 5")):
        bad = http.post("/search", json={"id": "fmnist-test-00003", "funnel": body})
        assert bad.status_code == 422 and message in bad.json()["detail"]
    http.__exit__(None, None, None)
    assert not list(qlog.glob("queries-*.npy"))  # explorer runs repeat the page's query: never logged


def test_a_model_that_cannot_be_loaded_is_a_one_line_error(setup):
    from mrl.tracking import client

    client(setup["uri"])  # models:/ resolves against this store
    with pytest.raises(MRLError, match=r"models:/fashion-mnist-mrl/99: cannot load the model \("):
        promote_mod.embed_with("models:/fashion-mnist-mrl/99", np.zeros((1, 1, 28, 28), np.uint8), 8)


def test_the_service_follows_the_alias_and_answers_503_not_500_when_its_collection_vanishes(setup, milvus, tmp_path):
    from mrl.service import create_app

    client, uri = milvus
    promote(setup, client, "1", uri=uri)
    app = create_app(setup["cfg"], uri, setup["uri"], tmp_path / "qlog", load_model=False, client=client,
                     reload_interval_s=0.3)
    with TestClient(app) as http:
        assert http.get("/readyz").json()["collection"] == "items_v1"
        promote(setup, client, "2", uri=uri)  # no /admin/reload: the replica notices the alias moved
        deadline = time.monotonic() + 30
        while http.get("/readyz").json()["collection"] != "items_v2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http.post("/search", json={"id": "fmnist-test-00001"}).json()["collection"] == "items_v2"
        assert 'mrl_index_reloads_total{status="ok",trigger="alias"} 1.0' in http.get("/metrics").text

    # A replica that does not follow (interval 0), on the milvus backend, whose collection is dropped under it:
    # a 503 that says why, counted in /metrics, not a 500.
    cfg = load_config(None, [*PARAMS, "retrieval.serve_backend=milvus"])
    app = create_app(cfg, uri, setup["uri"], tmp_path / "qlog", load_model=False, client=client, reload_interval_s=0)
    with TestClient(app) as http:
        assert http.post("/search", json={"id": "fmnist-test-00001"}).status_code == 200
        client.drop_alias("items")
        client.drop_collection("items_v2")
        answer = http.post("/search", json={"vector": [0.25] * 16})
        assert answer.status_code == 503 and answer.json()["detail"].startswith("search failed (")
        assert 'mrl_search_failures_total{error="' in http.get("/metrics").text

"""Serving at speed, checked for sameness: the memory backend started from a snapshot answers exactly what it answers
after reading Milvus, and falls back to Milvus (with a warning) when the snapshot is missing, stale or corrupt; a
batch of searches (the service's micro-batching) answers exactly what each search alone does, over the library and
over HTTP with concurrent requests."""

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from mrl.config import load_config
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel
from mrl.retrieval.lifecycle import drop_old_collections, snapshot_served
from mrl.retrieval.memory_index import MemoryFunnelIndex
from mrl.retrieval.snapshot import snapshot_root
from mrl.search import NotFound, Query, QueryError, Searcher
from mrl.service import create_app

pytestmark = pytest.mark.slow  # a Milvus Lite server (2-3 s on 2 busy cores)

N, DIM, DIMS = 2000, 32, [8, 16, 32]


def build(client, version: int, vectors: np.ndarray) -> str:
    previous = mi.alias_target(client, "items")
    info = mi.CollectionInfo(f"items_v{version}", "m", str(version), Funnel(8, 100, (32,), 4), DIMS, 10, previous)
    mi.create_collection(client, info, DIM, "FLAT", 16, 40)
    mi.insert_rows(client, info.name, np.array([f"item-{i:04d}" for i in range(N)]),
                   [f"class-{i % 5}" for i in range(N)], vectors, 8, 1000)
    mi.swap_alias(client, "items", info.name, expected=previous)
    return info.name


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("snapshots") / "milvus.db")
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, DIM))  # clustered, so an HNSW shortlist has neighbours to find
    vectors = (centres[rng.integers(20, size=N)] + 0.3 * rng.standard_normal((N, DIM))).astype(np.float32)
    client = mi.connect(uri)
    build(client, 1, vectors)
    yield client, uri, vectors
    client.close()


def answers(index, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    hits, _ = index.search(queries, 10)
    return [[(h["id"], h["score"]) for h in row] for row in hits]


def test_a_snapshot_starts_the_same_index_and_anything_wrong_with_it_falls_back_to_milvus(served, tmp_path):
    client, _, vectors = served
    cfg = load_config(None, []).retrieval
    lines: list[str] = []
    from_milvus = MemoryFunnelIndex(client, "items_v1", cfg, snapshots=tmp_path)  # none there yet
    assert from_milvus.source == "Milvus"
    folder = from_milvus.write_snapshot(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["full.npy", "ids.npy", "labels.npy", "manifest.json",
                                                        "shortlist.faiss"]
    started = MemoryFunnelIndex(client, "items_v1", cfg, lines.append, snapshots=tmp_path)
    assert started.source.startswith("snapshot") and not [w for w in lines if w.startswith("warning")]
    queries = vectors[:200] + 0.1
    assert answers(started, queries) == answers(from_milvus, queries)
    assert started.vector_of("item-0007").tolist() == from_milvus.vector_of("item-0007").tolist()

    # Another funnel's settings (stale), then a flipped byte in the re-rank table (corrupt): Milvus, with a warning.
    other = cfg.model_copy(update={"hnsw_m": 8})
    assert MemoryFunnelIndex(client, "items_v1", other, lines.append, snapshots=tmp_path).source == "Milvus"
    warning = [w for w in lines if w.startswith("warning")][-1]
    assert "its settings is" in warning and "reading items_v1 from Milvus" in warning
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"model_version": "7"}))
    assert MemoryFunnelIndex(client, "items_v1", cfg, lines.append, snapshots=tmp_path).source == "Milvus"
    assert "its model_version is '7'" in [w for w in lines if w.startswith("warning")][-1]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = bytearray((folder / "full.npy").read_bytes())
    data[-3] ^= 0xFF
    (folder / "full.npy").write_bytes(bytes(data))
    fallback = MemoryFunnelIndex(client, "items_v1", cfg, lines.append, snapshots=tmp_path)
    assert fallback.source == "Milvus" and "checksum mismatch in full.npy" in [w for w in lines if "warning" in w][-1]
    assert answers(fallback, queries) == answers(from_milvus, queries)


def test_the_snapshot_lives_beside_milvus_lite_is_used_by_the_searcher_and_goes_with_its_collection(served):
    client, uri, vectors = served
    cfg = load_config(None, ["retrieval.serve_backend=memory", "retrieval.keep_last=2",
                             "retrieval.drop_grace_s=0"])
    root = snapshot_root(None, uri)
    assert root.name == "milvus.db.snapshots" and root.parent == Path(uri).parent
    assert snapshot_root(None, "http://milvus:19530") is None and snapshot_root("/snap", "http://m:1").name == "snap"
    folder = snapshot_served(cfg, uri, log=lambda line: None)
    assert folder == root / "items_v1"
    searcher = Searcher.open(cfg, uri, load_model=False, client=client)
    assert searcher.items.source == f"snapshot {folder}"
    assert searcher.search(Query(id="item-0003"), k=3).results[0]["id"] == "item-0003"
    # Two later versions: v1 leaves the kept two, and its snapshot goes with it.
    build(client, 2, vectors)
    build(client, 3, vectors)
    assert drop_old_collections(client, "items", 2, 0.0, snapshots=root) == ["items_v1"]
    assert not folder.exists()


def test_a_batch_answers_what_each_search_alone_does_bad_queries_included(served):
    client, uri, vectors = served
    searcher = Searcher.open(load_config(None, ["retrieval.serve_backend=memory"]), uri, load_model=False,
                             client=client)
    queries = [Query(vector=vectors[i] + 0.05) for i in range(40)] + [Query(id="item-0011")]
    queries.insert(5, Query(vector=[1.0, 2.0]))  # wrong dim: a QueryError in its place
    queries.insert(9, Query(id="no-such-item"))  # a NotFound in its place
    batch = searcher.search_batch(queries, k=7)
    assert isinstance(batch[5], QueryError) and "expected 32 values" in str(batch[5])
    assert isinstance(batch[9], NotFound)
    for query, hits in zip(queries, batch):
        if isinstance(hits, Exception):
            continue
        alone = searcher.search(query, k=7)
        assert [h["id"] for h in hits.results] == [h["id"] for h in alone.results]
        assert [h["score"] for h in hits.results] == pytest.approx([h["score"] for h in alone.results], abs=1e-6)
        assert hits.collection == alone.collection and hits.funnel == alone.funnel and hits.kind == alone.kind


def test_concurrent_http_searches_are_batched_and_answer_as_one_at_a_time(served, tmp_path):
    client, uri, vectors = served
    cfg = load_config(None, ["retrieval.serve_backend=memory", "retrieval.audit_fraction=0"])
    bodies = [{"vector": (vectors[i] + 0.05).tolist(), "k": 5} for i in range(30)] + [
        {"id": f"item-{i:04d}", "k": 5} for i in range(30)] + [{"id": "no-such-item"}, {"vector": [0.5], "k": 5},
                                                               {"id": "item-0001", "k": 0}]

    async def run(max_batch: int) -> tuple[list, str]:
        app = create_app(cfg, uri, client=client, load_model=False, query_log_dir=tmp_path / f"log{max_batch}",
                         reload_interval_s=0, max_batch=max_batch)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                responses = await asyncio.gather(*(http.post("/search", json=b) for b in bodies))
                metrics = (await http.get("/metrics")).text
                api = (await http.get("/openapi.json")).json()
        # The route reads its body itself; the schema is still documented (/docs).
        body = api["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/SearchRequest"}
        assert {"vector", "id", "k", "funnel"} <= set(api["components"]["schemas"]["SearchRequest"]["properties"])
        assert "FunnelOverride" in api["components"]["schemas"]
        return [(r.status_code, [h["id"] for h in r.json().get("results", [])]) for r in responses], metrics

    batched, metrics = asyncio.run(run(64))
    alone, _ = asyncio.run(run(1))
    assert batched == alone
    assert [status for status, _ in batched[-3:]] == [404, 422, 422]
    assert all(status == 200 and len(ids) == 5 for status, ids in batched[:-3])
    count = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("mrl_search_batch_size_count")))
    total = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("mrl_search_batch_size_sum")))
    assert total == len(bodies) and count < total  # every search went through the batcher, in fewer calls

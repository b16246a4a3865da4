"""mrl.search.Searcher without HTTP or a model: a collection built directly in Milvus Lite (random unit vectors behind
the items alias), searched by vector and by id on both backends, the explorer, what it refuses, and following a moved
alias."""

import re

import numpy as np
import pytest

from mrl.config import load_config
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel, exact_search
from mrl.search import NotFound, Query, QueryError, Searcher

pytestmark = pytest.mark.slow  # a Milvus Lite server (2-3 s on 2 busy cores)

N, DIM, DIMS = 300, 16, [4, 8, 16]


def build(client, version: int, vectors: np.ndarray) -> str:
    """What a promotion leaves: items_v<N> with the rows and the funnel recorded, behind the items alias."""
    previous = mi.alias_target(client, "items")
    funnel = Funnel(4, N, (16,), 4)  # a shortlist of every item: random vectors have no Matryoshka prefixes
    info = mi.CollectionInfo(f"items_v{version}", "m", str(version), funnel, DIMS, 10, previous)
    mi.create_collection(client, info, DIM, "FLAT", 16, 40)
    ids = np.array([f"item-{i:03d}" for i in range(N)])
    mi.insert_rows(client, info.name, ids, [f"class-{i % 3}" for i in range(N)], vectors, 4, 1000)
    mi.swap_alias(client, "items", info.name, expected=previous)
    return info.name


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("searcher") / "milvus.db")
    vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    client = mi.connect(uri)
    build(client, 1, vectors)
    yield client, uri, vectors
    client.close()


def searcher_for(served, backend: str, **sets) -> Searcher:
    client, uri, _ = served
    cfg = load_config(None, [f"retrieval.serve_backend={backend}"] + [f"{k}={v}" for k, v in sets.items()])
    return Searcher.open(cfg, uri, load_model=False, client=client)


@pytest.mark.parametrize("backend", ["memory", "milvus"])
def test_search_by_vector_and_by_id_finds_what_exact_search_finds(served, backend):
    _, _, vectors = served
    searcher = searcher_for(served, backend)
    hits = searcher.search(Query(vector=vectors[7]), k=5)
    truth = exact_search(vectors, vectors[7:8], 5).indices[0]
    assert [h["id"] for h in hits.results] == [f"item-{i:03d}" for i in truth]
    assert hits.results[0]["id"] == "item-007" and hits.results[0]["label"] == "class-1"
    assert hits.collection == "items_v1" and hits.model_version == "1" and hits.funnel == "4@300 -> 16"
    assert hits.kind == "vector" and hits.query.shape == (DIM,) and hits.exact is None
    assert set(hits.timings_ms) >= {"shortlist_d4"}
    by_id = searcher.search(Query(id="item-007"), k=5)
    assert [h["id"] for h in by_id.results] == [h["id"] for h in hits.results]
    assert searcher.collections() == searcher.alias_targets() == ("items_v1", None)


def test_bad_queries_are_query_errors_and_unknown_ids_not_found(served):
    searcher = searcher_for(served, "memory")
    for query, which, error, says in [
        (Query(vector=[0.1] * 15), "items", QueryError, "vector: expected 16 values, got 15"),
        (Query(vector=[float("nan")] * 16), "items", QueryError, "vector: contains NaN or infinite values"),
        (Query(id="nope"), "items", NotFound, "id: unknown item id 'nope'"),
        (Query(image=b"\x89PNG"), "items", QueryError, "image: this service was started without a model"),
        (Query(text="a cat", label="--text"), "items", QueryError, "--text: this service was started without"),
        (Query(), "items", QueryError, "give exactly one of vector, id, image, clip, text (got none)"),
        (Query(id="a", text="b"), "items", QueryError, "got ['id', 'text']"),
        (Query(id="item-001"), "videos", NotFound, "no videos index is served (Milvus alias videos does not exist)"),
    ]:
        with pytest.raises(error) as caught:
            searcher.search(query, 5, which)
        assert says in str(caught.value), (query, str(caught.value))


def test_the_explorer_runs_any_shortlist_and_exact_search_beside_it(served):
    _, _, vectors = served
    searcher = searcher_for(served, "memory", **{"retrieval.explorer": "true"})
    assert searcher.explorer_ready() and searcher.describe()["explorer"] is True
    hits = searcher.search(Query(vector=vectors[3]), k=10, funnel=(8, 100), exact=True)
    assert hits.funnel == "8@100 -> 16" and set(hits.exact) == {"results", "ms", "recall"}
    assert hits.exact["recall"] == sum(h["id"] in {r["id"] for r in hits.results} for h in hits.exact["results"]) / 10
    assert hits.exact["results"][0]["id"] == "item-003"
    for funnel, says in [((5, 100), "funnel.d0: 5 is not one of the model's nesting dims [4, 8, 16]"),
                         ((8, 5), "funnel.k0: must be between k (10) and 10000, got 5")]:
        with pytest.raises(QueryError, match=re.escape(says)):
            searcher.search(Query(vector=vectors[3]), k=10, funnel=funnel)
    with pytest.raises(QueryError, match="explorer needs the memory backend"):
        searcher_for(served, "milvus").search(Query(vector=vectors[3]), exact=True)


def test_describe_says_what_is_served_and_a_moved_alias_is_seen(served):
    client, uri, vectors = served
    searcher = searcher_for(served, "memory")
    described = searcher.describe()
    assert described["collection"] == "items_v1" and described["backend"] == "MemoryFunnelIndex"
    assert described["nesting_dims"] == DIMS and described["items"] == N and "videos" not in described
    assert described["text_search"] is False
    build(client, 2, vectors[::-1].copy())
    try:
        assert searcher.collections() == ("items_v1", None) and searcher.alias_targets() == ("items_v2", None)
        assert Searcher.open(searcher.cfg, uri, load_model=False, client=client).collections() == ("items_v2", None)
    finally:
        client.alter_alias(collection_name="items_v1", alias="items")

import numpy as np
import pytest

from mrl.config import RetrievalConfig
from mrl.retrieval.choose import candidate_funnels, choose_funnel, measure_funnels
from mrl.retrieval.funnel import Funnel, InMemoryIndex, exact_search, recall_at_k


@pytest.fixture(scope="module")
def data():
    """Vectors whose variance falls with the dim index, like a Matryoshka embedding's."""
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(np.arange(1, 65))
    items = (rng.normal(size=(3000, 64)) * scale).astype(np.float32)
    queries = (items[:100] + 0.3 * rng.normal(size=(100, 64)) * scale).astype(np.float32)
    return items, queries


def test_stages_shrink_to_k():
    assert Funnel(16, 400, (64, 512), shrink=4).stages(10) == [(16, 400), (64, 100), (512, 10)]
    assert Funnel(16, 40, (64, 128, 512), shrink=4).stages(10) == [(16, 40), (64, 10), (128, 10), (512, 10)]
    assert Funnel(512, 10).stages(10) == [(512, 10)]
    assert Funnel(16, 400, (512,)).flops_per_query(1000, 10) == 1000 * 16 + 400 * 512


def test_funnel_equals_exact_search_when_the_shortlist_is_everything(data):
    items, queries = data
    truth = exact_search(items, queries, 10)
    result = InMemoryIndex(items).search(queries, Funnel(4, len(items), (64,)), 10)
    np.testing.assert_array_equal(result.indices, truth.indices)
    np.testing.assert_allclose(result.scores, truth.scores, rtol=1e-5)


def test_recall_does_not_fall_as_k0_grows(data):
    items, queries = data
    truth = exact_search(items, queries, 10).indices
    index = InMemoryIndex(items)
    recalls = [recall_at_k(index.search(queries, Funnel(8, k0, (64,)), 10).indices, truth) for k0 in (10, 20, 50, 200, 1000)]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]


def test_scores_are_cosine_at_the_last_stage(data):
    items, queries = data
    result = InMemoryIndex(items).search(queries[:3], Funnel(8, 100, (64,)), 5)
    q = queries[:3] / np.linalg.norm(queries[:3], axis=1, keepdims=True)
    top = items[result.indices] / np.linalg.norm(items[result.indices], axis=2, keepdims=True)
    np.testing.assert_allclose(result.scores, np.einsum("qd,qkd->qk", q, top), rtol=1e-5)
    assert set(result.timings_ms) == {"shortlist_d8", "rerank_d64"}


def test_choose_picks_the_fastest_funnel_that_meets_the_target(data):
    items, queries = data
    cfg = RetrievalConfig(candidate_d0=[4, 8, 16], candidate_k0=[20, 100, 400], cascades=[[64], [16, 64]],
                          candidate_binary_d0=[32, 64], index_type="FLAT", timed_queries=20, target_recall=0.95)
    funnels = candidate_funnels(cfg, [4, 8, 16, 32, 64])
    assert funnels[0] == Funnel(64, 10)  # exact full-dim search is always a candidate, first
    assert {f.quant for f in funnels} == {"float32", "int8", "binary"}
    assert Funnel(64, 100, (64,), 4, "binary") in funnels  # a binary shortlist may be re-ranked at its own dim
    costs = measure_funnels(items[100:], queries, funnels, cfg)
    chosen = choose_funnel(costs, 0.95)
    assert chosen.recall >= 0.95
    assert all(c.latency_ms >= chosen.latency_ms for c in costs if c.recall >= 0.95 and c.latency_ms is not None)
    # (On 2,900 items an exact scan may well be fastest: which funnel wins is measured, bench/ shows it at scale.)
    exact = costs[0]
    assert exact.recall == 1.0 and exact.speedup_flops == 1.0 and exact.bytes_per_item >= 4 * 64
    timed = [c for c in costs if c.latency_ms is not None]
    assert all(c.latency_ms > 0 and c.p99_ms >= c.latency_ms for c in timed) and len(timed) > 1
    assert all(c.recall < 0.95 for c in costs if c.latency_ms is None)  # only what can win is timed


def test_queries_that_are_catalogue_items_inflate_recall(data):
    """Why the choice searches a catalogue without its queries: an item queried against a catalogue that holds it
    finds itself, a free hit that no prefix can miss."""
    items, _ = data
    queries = items[:100]
    funnel = Funnel(4, 20, (64,))
    inside = recall_at_k(InMemoryIndex(items).search(queries, funnel, 10).indices, exact_search(items, queries, 10).indices)
    rest = items[100:]
    outside = recall_at_k(InMemoryIndex(rest).search(queries, funnel, 10).indices, exact_search(rest, queries, 10).indices)
    assert inside > outside + 0.02


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
def test_in_process_funnel_matches_the_exact_reference(data, index_type):
    """The memory backend's search (FAISS shortlist, cascade over gathered rows) returns the reference's
    neighbours; with an exact shortlist, exactly them."""
    from mrl.retrieval.memory_index import funnel_search_rows
    from mrl.retrieval.shortlist import ShortlistIndex

    items, queries = data
    funnel = Funnel(8, 200, (16, 64))
    reference = InMemoryIndex(items).search(queries, funnel, 10)
    ours = funnel_search_rows(ShortlistIndex(items, 8, "float32", index_type), items, queries, funnel, 10)
    if index_type == "FLAT":
        np.testing.assert_array_equal(ours.indices, reference.indices)
        np.testing.assert_allclose(ours.scores, reference.scores, rtol=1e-5)
    assert recall_at_k(ours.indices, reference.indices) >= 0.98
    assert set(ours.timings_ms) == {"shortlist_d8", "rerank_d16", "rerank_d64"}


@pytest.mark.parametrize(("quant", "d0", "bytes_per_item", "isotropic"),
                         [("float32", 16, 64, False), ("int8", 16, 16, False), ("binary", 256, 32, True)])
def test_quantized_shortlists_reach_their_recall(data, quant, d0, bytes_per_item, isotropic):
    """int8 and sign-bit shortlists, re-ranked in float32, keep recall on a small set at a fraction of the bytes.
    Sign bits weigh every dim alike, so the binary case uses 16-dim structure spread evenly over 256 dims (each
    sign bit is then a random hyperplane, as in SimHash). On the steep spectrum above, or with only 64 bits, a
    sign-bit code finds half to 3/4 of the top 10 at k0 = 300: bench/ measures real embeddings."""
    from mrl.retrieval.memory_index import funnel_search_rows
    from mrl.retrieval.shortlist import ShortlistIndex

    items, queries = data
    if isotropic:
        rng = np.random.default_rng(1)
        spread = np.linalg.qr(rng.normal(size=(256, 16)))[0].T  # 16 orthonormal rows in 256 dims
        items = (items[:, :16] @ spread).astype(np.float32)
        queries = (queries[:, :16] @ spread).astype(np.float32)
    catalogue = items[100:]
    truth = exact_search(catalogue, queries, 10).indices
    funnel = Funnel(d0, 300, (items.shape[1],), 4, quant)
    shortlist = ShortlistIndex(catalogue, d0, quant, "FLAT")
    recall = recall_at_k(funnel_search_rows(shortlist, catalogue, queries, funnel, 10).indices, truth)
    assert recall >= 0.97
    assert funnel.bytes_per_item() == bytes_per_item
    assert shortlist.bytes_per_item() < bytes_per_item + 1  # FAISS stores just the codes (plus a header)


def test_binary_scores_are_minus_the_hamming_distance(data):
    from mrl.retrieval.shortlist import ShortlistIndex, sign_bits

    items, queries = data
    indices, scores = ShortlistIndex(items, 64, "binary", "FLAT").search(queries[:5], 20)
    hamming = np.unpackbits(sign_bits(items[indices], 64) ^ sign_bits(queries[:5], 64)[:, None, :], axis=-1).sum(-1)
    np.testing.assert_array_equal(-scores, hamming)
    assert (np.diff(-scores, axis=1) >= 0).all()  # best (fewest differing bits) first


def test_funnel_names_and_specs_round_trip():
    binary = Funnel(256, 400, (256, 512), 4, "binary")
    assert binary.name() == "256:binary@400 -> 256 -> 512"
    assert Funnel.from_dict(binary.to_dict()) == binary
    assert Funnel.from_dict({"d0": 8, "k0": 400, "rerank_dims": [64, 512]}).quant == "float32"  # older collections
    with pytest.raises(ValueError, match="quant"):
        Funnel(8, 400, (512,), 4, "int4")
    with pytest.raises(ValueError, match="multiple of 8"):
        Funnel(12, 400, (512,), 4, "binary")


def test_auto_serves_milvus_lite_from_memory_and_a_server_through_milvus():
    from mrl.retrieval.backends import resolve_backend

    class Server:  # what get_server_version() answers: Milvus Lite behind a URL, and a real server
        def __init__(self, version):
            self.version = version

        def get_server_version(self):
            return self.version

    assert resolve_backend("auto", "some/dir/milvus.db") == "memory"
    assert resolve_backend("auto", "http://127.0.0.1:19530", Server("milvus_lite-3.2.2")) == "memory"
    assert resolve_backend("auto", "http://127.0.0.1:19530", Server("v2.3.5-lite")) == "milvus"  # the standalone server
    assert resolve_backend("memory", "http://127.0.0.1:19530") == "memory"
    assert resolve_backend("milvus", "milvus.db") == "milvus"

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


def test_choose_picks_the_cheapest_funnel_that_meets_the_target(data):
    items, queries = data
    cfg = RetrievalConfig(candidate_d0=[4, 8, 16], candidate_k0=[20, 100, 400], cascades=[[64], [16, 64]])
    funnels = candidate_funnels(cfg, [4, 8, 16, 32, 64])
    assert Funnel(64, 10) in funnels  # exact full-dim search is always a candidate
    costs = measure_funnels(items, queries, funnels, 10)
    chosen = choose_funnel(costs, 0.95)
    assert chosen.recall >= 0.95
    assert all(c.flops_per_query >= chosen.flops_per_query for c in costs if c.recall >= 0.95)
    assert chosen.funnel != Funnel(64, 10), "a funnel should beat exact search on these vectors"
    exact = next(c for c in costs if c.funnel == Funnel(64, 10))
    assert exact.recall == 1.0 and exact.speedup_flops == 1.0

"""The text adapter starts at the base embedding; the pair loss; retrieval metrics and baselines by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrl.data import Dataset
from mrl.losses import MatryoshkaLoss, PairInfoNCE
from mrl.models.text_adapter import TextAdapter
from mrl.text.adapter import resolve_nesting_dims
from mrl.text.artifact import TextDataset
from mrl.text.evaluate import evaluate_retrieval, fit_pca, ranking_metrics, train_documents
from mrl.text.wordnet import parse_data_line


@pytest.mark.parametrize("hidden", [0, 16])
def test_adapter_starts_at_the_normalized_base_embedding(hidden):
    torch.manual_seed(0)
    x = torch.randn(20, 12) * 3
    y = TextAdapter(12, hidden)(x)
    torch.testing.assert_close(y, F.normalize(x, dim=-1))


def test_nesting_dims_default_to_powers_of_two_and_the_base_dim():
    assert resolve_nesting_dims([], 384) == [8, 16, 32, 64, 128, 256, 384]
    assert resolve_nesting_dims([], 768) == [8, 16, 32, 64, 128, 256, 512, 768]
    assert resolve_nesting_dims([4, 8], 384) == [4, 8]


def test_pair_infonce_by_hand_and_masks_shared_documents():
    loss = PairInfoNCE(temperature=1.0, symmetric=False)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # two positives and one extra (hard) negative
    value = loss(q, (d, torch.tensor([0, 1, 2])))
    c = 1 / math.sqrt(2)  # cosine of each query with the hard negative
    expected = -math.log(math.e / (math.e + 1 + math.exp(c)))
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # the same document for both queries: neither is the other's negative, only the hard negative is left
    shared = loss(q, (d, torch.tensor([0, 0, 2])))
    expected_shared = 0.5 * (-math.log(math.e / (math.e + math.exp(c))) - math.log(math.e / (math.e + math.exp(c))))
    assert shared.item() == pytest.approx(expected_shared, rel=1e-6)


def test_matryoshka_over_pairs_truncates_documents_per_prefix():
    torch.manual_seed(0)
    q, d = torch.randn(8, 16), torch.randn(8, 16)
    ids = torch.arange(8)
    total, per_dim = MatryoshkaLoss(PairInfoNCE(0.1), [4, 16])(q, (d, ids))
    assert per_dim[0].item() == pytest.approx(PairInfoNCE(0.1)(q[:, :4], (d, ids)).item())
    assert total.item() == pytest.approx(per_dim.sum().item())


def test_ranking_metrics_by_hand():
    top = np.array([[2, 0, 1], [1, 2, 0], [2, 1, 0]])
    relevant = [np.array([0]), np.array([0, 1]), np.array([0])]
    m = ranking_metrics(top, relevant, 3)
    ndcg = [1 / math.log2(3), (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)), 1 / math.log2(4)]
    assert m["recall_at_3"] == pytest.approx(1.0)
    assert m["ndcg_at_3"] == pytest.approx(np.mean(ndcg))
    assert m["mrr_at_3"] == pytest.approx(np.mean([1 / 2, 1, 1 / 3]))
    at_1 = ranking_metrics(top, relevant, 1)
    assert (at_1["recall_at_1"], at_1["ndcg_at_1"], at_1["mrr_at_1"]) == pytest.approx((0.5 / 3, 1 / 3, 1 / 3))


def test_truncation_baseline_renormalizes_the_prefix():
    # full dim: the query's large third coordinate makes doc 1 nearest; its 2-dim prefix (0.9, 0.1) is nearest doc 0
    docs = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -5.0], [0.0, -1.0, 0.0]], np.float32)
    query = np.array([[0.9, 0.1, -10.0]], np.float32)
    r = evaluate_retrieval(query, docs, [np.array([0])], [1, 2, 3], 1, train_docs=docs)["truncated"]
    # prefix 1: the sign of the first coordinate: doc 0 scores 1, docs 1 and 2 (first coordinate 0) score 0
    assert [r[m]["recall_at_1"] for m in (1, 2, 3)] == [1.0, 1.0, 0.0]


def test_pca_baseline_is_fitted_on_training_documents_only():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    docs = (rng.normal(size=(40, 6)) * [5, 3, 1, 0.5, 0.2, 0.1]) @ basis.T  # known principal axes: basis columns
    docs = docs.astype(np.float32)
    queries = (docs[:10] + 0.3 * rng.normal(size=(10, 6))).astype(np.float32)
    td = TextDataset(Dataset("vectors", docs, np.array([f"d{i}" for i in range(40)]), np.full(40, -1),
                             np.full(40, "train"), np.array([], str)),
                     np.array([f"doc {i}" for i in range(40)]), np.array(["q0", "q1", "q2"]),
                     np.array(["a", "b", "c"]), docs[:3], np.array(["train", "train", "test"]),
                     np.array([0, 1, 2, 0]), np.array([5, 6, 7, 8]), "model", "key")
    assert train_documents(td).tolist() == [5, 6, 8]  # doc 7 is paired with a test query only
    pca = fit_pca(docs[:30], 2)
    # the first two components are the two widest axes (up to sign), and the projection is centred
    np.testing.assert_allclose(np.abs(pca.components_ @ basis[:, :2]), np.eye(2), atol=0.1)
    manual = (queries - docs[:30].mean(0)) @ pca.components_.T
    np.testing.assert_allclose(pca.transform(queries), manual, atol=1e-4)
    relevant = [np.array([i]) for i in range(10)]
    r = evaluate_retrieval(queries, docs, relevant, [2, 6], 5, train_docs=docs[:30])

    def top5(q: np.ndarray, d: np.ndarray) -> np.ndarray:
        scores = F.normalize(torch.from_numpy(q), dim=1) @ F.normalize(torch.from_numpy(d), dim=1).T
        return np.argsort(-scores.numpy(), axis=1)[:, :5]

    centred_docs = docs - docs[:30].mean(0)
    assert r["pca"][2] == pytest.approx(ranking_metrics(top5(manual, centred_docs @ pca.components_.T), relevant, 5))
    # PCA at the full 6 dims is a rotation of the centred space: the same ranking as cosine after centring
    assert r["pca"][6] == pytest.approx(ranking_metrics(top5(queries - docs[:30].mean(0), centred_docs), relevant, 5))


def test_wordnet_line_gives_synset_first_lemma_and_definition():
    line = ('00002325 29 v 02 respire 1 breathe 0 005 $ 00001740 v 0000 01 + 02 00 | undergo the processes of '
            'respiration; take up oxygen; "The plant respires"; "Our breathing became shallower"  \n')
    assert parse_data_line(line) == ("v00002325", "respire", "undergo the processes of respiration; take up oxygen")
    assert parse_data_line("  1 This software and database is being provided\n") is None
    adj = "01234567 00 s 01 beautiful(a) 0 000 | delighting the senses  \n"
    assert parse_data_line(adj) == ("s01234567", "beautiful", "delighting the senses")


def test_text_config_errors_name_the_key():
    from mrl.config import load_config
    from mrl.errors import MRLError

    assert load_config(None, ["ingest.source=text", "text.hidden_dim=64"]).text.hidden_dim == 64
    for override, key in (("text.nesting_dims=[16, 8]", "text.nesting_dims"), ("text.epoch=3", "text.epoch"),
                          ("text.dim_weights=[1, 2]", "text.dim_weights"), ("text.temperature=0", "text.temperature"),
                          ("text.objective=labels", "text.objective"), ("text.neighbours=0", "text.neighbours"),
                          ("text.similarity_weight=0", "text.similarity_weight")):
        with pytest.raises(MRLError, match=key.replace(".", r"\.")):
            load_config(None, [override, "text.nesting_dims=[8, 16, 32]"] if "weights" in key else [override])


def test_neighbours_are_each_items_nearest_documents_never_itself():
    from mrl.text.train import mine_neighbours

    rng = np.random.default_rng(0)
    docs, queries = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
    items, nb = mine_neighbours(docs, queries, 5)
    np.testing.assert_array_equal(items, np.concatenate([docs, queries]))
    cos = F.normalize(torch.from_numpy(items), dim=1) @ F.normalize(torch.from_numpy(docs), dim=1).T
    cos[torch.arange(30), torch.arange(30)] = -2.0  # a document is not its own neighbour
    np.testing.assert_array_equal(nb, cos.topk(5, dim=1).indices.numpy())
    assert mine_neighbours(docs[:4], queries, 10)[1].shape == (8, 3)  # a tiny corpus: every other document


def test_text_losses_follow_the_objective():
    from mrl.config import load_config
    from mrl.errors import MRLError
    from mrl.losses import SimilarityPreserving
    from mrl.text.train import build_text_losses

    def losses(*overrides, dims=(8, 16)):
        return build_text_losses(load_config(None, list(overrides)).text, list(dims), 16)

    pair, sim = losses()  # the default: both
    assert isinstance(pair.inner_loss, PairInfoNCE) and isinstance(sim.inner_loss, SimilarityPreserving)
    pair, sim = losses("text.objective=pairs")
    assert isinstance(pair.inner_loss, PairInfoNCE) and sim is None  # pairs only, the earlier default
    pair, sim = losses("text.objective=similarity", "text.neighbours=4", "text.reconstruction_weight=0.5")
    assert pair is None and isinstance(sim.inner_loss, SimilarityPreserving)
    assert (sim.inner_loss.neighbours, sim.inner_loss.reconstruction_weight) == (4, 0.5)
    with pytest.raises(MRLError, match="text.reconstruction_weight"):
        losses("text.objective=both", dims=(8,))  # reconstruction needs the full dim among the nesting dims
    assert losses("text.objective=both", "text.reconstruction_weight=0", dims=(8,))[1] is not None

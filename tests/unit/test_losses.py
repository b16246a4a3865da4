import pytest
import torch
import torch.nn.functional as F

from mrl.config import load_config
from mrl.losses import InfoNCE, MatryoshkaLoss, NestedLinearHeads, TiedLinearHead, build_loss

DIMS = [2, 4, 8]


def embeddings(batch: int = 6, dim: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(batch, dim, requires_grad=True)


def labels(batch: int = 6) -> torch.Tensor:
    return torch.arange(batch) % 3


def test_mrl_applies_inner_loss_to_each_prefix_with_weights():
    heads = NestedLinearHeads(DIMS, 3)
    loss = MatryoshkaLoss(heads, DIMS, [1.0, 0.5, 2.0])
    emb, y = embeddings(), labels()
    total, per_dim = loss(emb, y)
    expected = [F.cross_entropy(heads.heads[i](emb[:, :m]), y) for i, m in enumerate(DIMS)]
    assert torch.allclose(per_dim, torch.stack(expected).detach())
    assert torch.isclose(total, expected[0] + 0.5 * expected[1] + 2.0 * expected[2])


def test_gradients_reach_every_prefix_and_every_head():
    heads = NestedLinearHeads(DIMS, 3)
    emb = embeddings()
    total, _ = MatryoshkaLoss(heads, DIMS)(emb, labels())
    total.backward()
    assert (emb.grad.abs().sum(0) > 0).all(), "every embedding dim up to d_max gets a gradient"
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in heads.heads)


def test_smallest_prefix_gets_gradient_from_every_dim():
    # Removing the larger dims' losses changes the gradient on the first dims: all prefixes train them.
    torch.manual_seed(1)
    heads = NestedLinearHeads(DIMS, 3)
    emb_all, emb_small = embeddings(), embeddings()
    MatryoshkaLoss(heads, DIMS)(emb_all, labels())[0].backward()
    MatryoshkaLoss(heads, DIMS, [1.0, 0.0, 0.0])(emb_small, labels())[0].backward()
    assert not torch.allclose(emb_all.grad[:, :2], emb_small.grad[:, :2])
    assert emb_small.grad[:, 2:].abs().sum() == 0


def test_mrl_e_shares_one_weight_matrix():
    head = TiedLinearHead(DIMS, 3)
    assert [p.shape for p in head.parameters()] == [torch.Size([3, 8]), torch.Size([3])]
    emb = embeddings()
    # Prefix m's logits are exactly the first m columns of the shared W.
    logits = head.logits(emb[:, :4], 1)
    assert torch.allclose(logits, emb[:, :4] @ head.head.weight[:, :4].T + head.head.bias)
    # Only the smallest prefix's loss: gradient lands on W[:, :2] and nowhere else.
    MatryoshkaLoss(head, DIMS, [1.0, 0.0, 0.0])(emb, labels())[0].backward()
    grad = head.head.weight.grad
    assert grad[:, :2].abs().sum() > 0 and grad[:, 2:].abs().sum() == 0


def test_infonce_renormalizes_each_prefix():
    loss = InfoNCE(temperature=0.5)
    a = embeddings()
    b = a.detach() + 0.01 * torch.randn_like(a)
    value = loss(a[:, :4], b, 1)
    # Scaling the inputs must not change a cosine-based loss.
    assert torch.isclose(value, loss(10 * a[:, :4], 3 * b, 1))
    # Matched pairs score better than shuffled ones.
    assert value < loss(a[:, :4], b.roll(1, dims=0), 1)


@pytest.mark.parametrize(
    "dims, weights, message",
    [
        ([], None, "must not be empty"),
        ([4, 2], None, "strictly increasing"),
        ([2, 2], None, "strictly increasing"),
        ([0, 2], None, "positive integers"),
        ([2.5, 4], None, "positive integers"),
        ([2, 4], [1.0], "1 dim_weights for 2 nesting_dims"),
        ([2, 4], [1.0, -1.0], "finite, >= 0"),
        ([2, 4], [0.0, 0.0], "not all 0"),
        ([2, 4], [1.0, float("nan")], "finite"),
    ],
)
def test_bad_arguments_are_rejected(dims, weights, message):
    with pytest.raises(ValueError, match=message):
        MatryoshkaLoss(InfoNCE(), dims, weights)


def test_inner_heads_must_match_dims():
    with pytest.raises(ValueError, match="inner loss built for dims"):
        MatryoshkaLoss(NestedLinearHeads([2, 4], 3), [2, 8])


def test_embedding_narrower_than_largest_dim_is_rejected():
    with pytest.raises(ValueError, match="embedding has 4 dims"):
        MatryoshkaLoss(InfoNCE(), DIMS)(torch.randn(3, 4), torch.randn(3, 4))


def test_build_loss_from_config():
    cfg = load_config(None, ["model.nesting_dims=[2, 4]", "model.embedding_dim=4", "loss.objective=mrl_e"])
    loss = build_loss(cfg, 5)
    assert isinstance(loss.inner_loss, TiedLinearHead)
    assert loss.get_config_dict() == {"inner_loss": "TiedLinearHead", "nesting_dims": [2, 4], "dim_weights": [1.0, 1.0]}


def test_similarity_preserving_is_zero_when_each_prefix_keeps_the_base_neighbourhoods():
    from mrl.losses import SimilarityPreserving

    base = F.normalize(torch.randn(16, 32), dim=1)
    loss = SimilarityPreserving(tau=0.05)
    assert loss(base.clone(), base).item() == pytest.approx(0.0, abs=1e-5)  # same similarities: nothing to learn
    scrambled = base[torch.randperm(16)]
    assert loss(scrambled, base).item() > 1.0  # other neighbours: a large divergence
    # the instance term pulls two views of an item together: it is lower when row i and i + B agree
    views = torch.cat([base[:8], base[:8] + 0.01 * torch.randn(8, 32)])
    with_instance = SimilarityPreserving(tau=0.05, instance_weight=1.0, temperature=0.1)
    assert with_instance(views, views).item() < with_instance(torch.cat([base[:8], base[8:]]), views).item()


def test_similarity_objective_trains_every_prefix_toward_the_base():
    from mrl.config import load_config as config

    cfg = config(None, ["loss.objective=similarity", "model.nesting_dims=[2, 8]", "model.embedding_dim=8",
                        "loss.instance_weight=0"])
    loss = build_loss(cfg, num_classes=0)  # no labels needed
    torch.manual_seed(0)
    base = torch.randn(32, 8) @ torch.diag(torch.tensor([4.0, 3.0, 1, 1, 1, 1, 1, 1]))
    head = torch.nn.Linear(8, 8)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = None
    for _ in range(100):
        value, per_dim = loss(head(base), base)
        first = per_dim if first is None else first
        opt.zero_grad()
        value.backward()
        opt.step()
    assert (per_dim < first * 0.5).all()  # the 2-dim prefix learns the two dominant directions' neighbourhoods


@pytest.mark.parametrize("bad", [{"tau": 0}, {"temperature": -1}, {"instance_weight": -0.1}])
def test_similarity_preserving_rejects_bad_arguments(bad):
    from mrl.losses import SimilarityPreserving

    with pytest.raises(ValueError, match="SimilarityPreserving"):
        SimilarityPreserving(**bad)


def _similarity_batch(n: int = 12, k: int = 3, dim: int = 16, seed: int = 0):
    """n anchors and their k base neighbours (mined over a larger corpus), as rows of one batch."""
    gen = torch.Generator().manual_seed(seed)
    corpus = F.normalize(torch.randn(200, dim, generator=gen), dim=1)
    anchors = torch.randperm(200, generator=gen)[:n]
    sims = (corpus[anchors] @ corpus.T).scatter(1, anchors[:, None], float("-inf"))
    top = sims.topk(k, dim=1).indices  # (n, k) corpus rows
    rows = torch.cat([anchors, top.reshape(-1)])
    return corpus[rows], n + torch.arange(n * k).reshape(n, k)


def test_similarity_terms_are_zero_at_the_identity_and_positive_when_prefixes_scramble_neighbours():
    from mrl.losses import SimilarityPreserving, SimilarityTarget

    base, neighbours = _similarity_batch()
    loss = SimilarityPreserving(tau=0.05, neighbour_weight=1.0, reconstruction_weight=1.0)
    target = SimilarityTarget(base, neighbours)
    terms = loss.terms(base.clone(), target)  # the identity adapter, at full dim
    assert set(terms) == {"batch", "neighbours", "reconstruction"}
    assert all(v.item() == pytest.approx(0.0, abs=1e-5) for v in terms.values())
    assert loss(3.0 * base, target).item() == pytest.approx(0.0, abs=1e-5)  # cosines: the scale is free
    # an adapter that rotates the space keeps every cosine: still 0
    rotation = torch.linalg.qr(torch.randn(16, 16))[0]
    assert loss.terms(base @ rotation, target)["neighbours"].item() == pytest.approx(0.0, abs=1e-5)
    scrambled = base.clone()
    scrambled[12:] = base[12:].roll(3, dims=0)  # each anchor's neighbours are now the previous anchor's
    scrambled_terms = loss.terms(scrambled, target)
    assert scrambled_terms["neighbours"].item() > 0.2  # top-k cosines ~0.6 became ~0
    assert scrambled_terms["reconstruction"].item() > 0.01  # the rows moved away from their base


def test_neighbour_term_mines_in_batch_without_given_neighbours():
    from mrl.losses import SimilarityPreserving

    base = F.normalize(torch.randn(24, 16), dim=1)
    loss = SimilarityPreserving(tau=0.05, batch_weight=0.0, neighbour_weight=1.0, neighbours=4)
    assert loss(base.clone(), base).item() == pytest.approx(0.0, abs=1e-5)
    # each row moved toward its 4th nearest (by the base) and away from its nearest: its top-4 cosines change
    top = (base @ base.T).fill_diagonal_(float("-inf")).topk(4, dim=1).indices
    prefix = base.clone().requires_grad_(True)
    value = loss(prefix + 0.5 * (base[top[:, 3]] - base[top[:, 0]]), base)
    assert value.item() > 0.05
    value.backward()
    assert prefix.grad.abs().sum() > 0


def test_similarity_weights_scale_their_terms_and_gradients_reach_every_prefix():
    from mrl.losses import SimilarityPreserving, SimilarityTarget

    base, neighbours = _similarity_batch()
    target = SimilarityTarget(base, neighbours)
    torch.manual_seed(1)
    emb = (base + 0.3 * torch.randn_like(base)).requires_grad_(True)
    unit = SimilarityPreserving(tau=0.05, neighbour_weight=1.0, reconstruction_weight=1.0)
    terms = unit.terms(emb, target)
    weighted = SimilarityPreserving(tau=0.05, batch_weight=0.5, neighbour_weight=2.0, reconstruction_weight=3.0)
    expected = 0.5 * terms["batch"] + 2.0 * terms["neighbours"] + 3.0 * terms["reconstruction"]
    assert weighted(emb, target).item() == pytest.approx(expected.item(), rel=1e-5)
    only_batch = SimilarityPreserving(tau=0.05)
    assert set(only_batch.terms(emb, target)) == {"batch"}  # the default: the image head's objective, unchanged
    # through MatryoshkaLoss: every dim gets a gradient; reconstruction only at the prefix as wide as the base
    total, per_dim = MatryoshkaLoss(weighted, [4, 8, 16])(emb, target)
    total.backward()
    assert (emb.grad.abs().sum(0) > 0).all() and (per_dim > 0).all()
    narrow = SimilarityPreserving(tau=0.05, reconstruction_weight=1.0).terms(emb[:, :8], target)
    assert "reconstruction" not in narrow
    with pytest.raises(ValueError, match="as wide"):
        SimilarityPreserving(reconstruction_weight=1.0)(torch.randn(12 * 4, 32), target)


@pytest.mark.parametrize("bad", [{"neighbour_weight": -1.0}, {"reconstruction_weight": float("nan")},
                                 {"neighbours": 0}, {"batch_weight": 0.0}])
def test_similarity_preserving_rejects_bad_term_arguments(bad):
    from mrl.losses import SimilarityPreserving

    with pytest.raises(ValueError, match="SimilarityPreserving"):
        SimilarityPreserving(**bad)


def test_similarity_defaults_are_the_image_heads_objective_unchanged():
    # batch KL at tau plus the two-view InfoNCE, by hand: what loss.objective similarity trained before the new terms
    from mrl.losses import SimilarityPreserving

    torch.manual_seed(2)
    prefix, base = torch.randn(10, 6), torch.randn(10, 32)
    own = torch.eye(10, dtype=torch.bool)
    b, z = F.normalize(base, dim=1), F.normalize(prefix, dim=1)
    target = F.softmax((b @ b.T).masked_fill(own, float("-inf")) / 0.05, dim=1)
    log_q = F.log_softmax((z @ z.T).masked_fill(own, float("-inf")) / 0.05, dim=1)
    kl = (target * (target.clamp_min(1e-30).log() - log_q.masked_fill(own, 0.0))).masked_fill(own, 0.0).sum() / 10
    logits = z[:5] @ z[5:].T / 0.1
    nce = 0.5 * (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5)))
    assert SimilarityPreserving(0.05, 0.2, 0.1)(prefix, base).item() == pytest.approx((kl + 0.2 * nce).item(), rel=1e-5)

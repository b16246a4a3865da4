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

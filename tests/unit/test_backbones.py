"""Pretrained backbones: packaged weights load, a missing or foreign weights file is a one-line error that writes
nothing, freezing, the feature cache, and ONNX Runtime's parity with torch."""

import numpy as np
import pytest
import torch
from helpers import invoke, one_line_error

from mrl.config import load_config
from mrl.data import Dataset, save_dataset
from mrl.errors import MRLError
from mrl.models import build_encoder
from mrl.models.backbones import freeze_backbone
from mrl.models.features import cached_features
from mrl.models.onnx import check_parity, numpy_function

SMALL = ["model.backbone=efficientnet_lite0", "model.image_size=64", "model.embedding_dim=32",
         "model.nesting_dims=[8, 16, 32]", "model.mlp_hidden_dim=64"]


def encoder(size: int = 64, pretrained: bool = True):
    cfg = load_config(None, [*SMALL, f"model.image_size={size}"])
    return build_encoder(cfg.model, "images", (3, size, size), pretrained).eval()


def pixels(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 3, size, size), dtype=np.uint8)


@pytest.mark.slow  # ~10 s: export and torch eager at 224 px
def test_onnx_runtime_matches_torch_at_224():
    enc = encoder(224)
    assert check_parity(enc, numpy_function(enc, (3, 224, 224)), pixels(4, 224)) >= 0.999


def test_packaged_weights_differ_from_random_init():
    trained, untrained = encoder(), encoder(pretrained=False)
    stem = "backbone.net._conv_stem.weight"
    assert not torch.equal(trained.state_dict()[stem], untrained.state_dict()[stem])


def test_freeze_all_some_or_none():
    enc = encoder()
    freeze_backbone(enc, "all")
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    assert all(p.requires_grad for p in enc.head.parameters())
    freeze_backbone(enc, 2)
    blocks = enc.backbone.blocks
    assert all(p.requires_grad for b in blocks[-2:] for p in b.parameters())
    assert not any(p.requires_grad for b in blocks[:-2] for p in b.parameters())
    freeze_backbone(enc, "none")
    assert all(p.requires_grad for p in enc.backbone.parameters())
    with pytest.raises(MRLError, match="train.freeze: 99 blocks"):
        freeze_backbone(enc, 99)


@pytest.mark.slow  # ~10 s: three exports
def test_feature_cache_is_reused_and_keyed_by_content(tmp_path):
    backbone, said = encoder().backbone, []
    x = pixels(5)
    first = cached_features(backbone, x, 2, 0, tmp_path, log=said.append)
    again = cached_features(backbone, x, 2, 0, tmp_path, log=said.append)
    assert first.shape == (5, 3, 1280) and np.array_equal(first, again)
    assert "computed" in said[0] and "from the cache" in said[1]
    cached_features(backbone, pixels(5, seed=1), 2, 0, tmp_path, log=said.append)
    assert "computed" in said[2] and len(list(tmp_path.glob("*.npy"))) == 2
    # the clean view is the backbone's features of the image itself
    with torch.no_grad():
        direct = backbone(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(first[:, 0], direct, rtol=2e-2, atol=2e-2)


@pytest.fixture
def rgb_dataset(tmp_path):
    labels = np.arange(24) % 2
    ds = Dataset("images", pixels(24), np.array([f"i{i}" for i in range(24)]), labels,
                 np.where(np.arange(24) % 4 == 0, "test", "train"), np.array(["a", "b"]))
    return save_dataset(ds, tmp_path / "rgb.npz")


def test_missing_or_foreign_weights_are_one_line_errors(rgb_dataset, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not torch")
    sets = [a for s in SMALL for a in ("--set", s)]
    for weights, says in ((tmp_path / "none.pt", "file not found"), (foreign, "not efficientnet_lite0 weights"),
                          (garbage, "not a readable torch state_dict")):
        out = tmp_path / "out" / "model.pt"
        result = invoke("train", "--data", rgb_dataset, "--out", out, *sets, "--set", f"model.weights={weights}")
        one_line_error(result, f"model.weights: {weights}", says)
        assert not out.parent.exists()


def test_wrong_image_shape_names_the_fix(tmp_path):
    ds = Dataset("images", np.zeros((8, 1, 28, 28), np.uint8), np.array([f"i{i}" for i in range(8)]),
                 np.arange(8) % 2, np.array(["train"] * 6 + ["test"] * 2), np.array(["a", "b"]))
    path = save_dataset(ds, tmp_path / "grey.npz")
    sets = [a for s in SMALL for a in ("--set", s)]
    result = invoke("train", "--data", path, "--out", tmp_path / "m.pt", *sets)
    one_line_error(result, "takes RGB images of 64x64", "ingest.grayscale: false")


def test_residual_head_starts_as_pca():
    from mrl.models.backbones import ResidualHead

    torch.manual_seed(0)
    x = torch.randn(200, 12) @ torch.diag(torch.linspace(5, 0.1, 12))
    head = ResidualHead(12, 4, 16, 0.0)
    head.init_pca(x)
    y = head(x).detach()
    centred = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    torch.testing.assert_close(y, centred @ v[:4].T, rtol=1e-4, atol=1e-4)
    assert y.var(dim=0)[0] > y.var(dim=0)[-1]  # ordered: the first dims carry the most variance

"""The vectors adapter of `mrl adapt`: Matryoshka prefixes over embeddings a user already has, learnt without labels.

The same residual map as the text adapter (`TextAdapter`: y = x + Wx + b (+ MLP(x)) over the L2-normalized base
vector, starting as the identity), trained with the similarity-preserving objective: each prefix's in-batch similarity
distribution matches the base vectors' at full dimension (mrl.losses.similarity)."""

from __future__ import annotations

from typing import Any

from mrl.config import Config
from mrl.losses import MatryoshkaLoss, SimilarityPreserving
from mrl.models.text_adapter import TextAdapter

ENCODER = "vectors_adapter"  # checkpoint meta["encoder"]


def build_vectors_adapter_and_loss(cfg: Config, meta: dict[str, Any]) -> tuple[TextAdapter, MatryoshkaLoss]:
    """An untrained adapter and its loss as a checkpoint's saved config and meta describe them."""
    loss = MatryoshkaLoss(SimilarityPreserving(cfg.adapt.tau), list(cfg.model.nesting_dims))
    return TextAdapter(meta["item_shape"][0], meta["hidden_dim"]), loss

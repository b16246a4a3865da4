"""MatryoshkaLoss: apply an inner loss to every nested prefix of one full embedding, with weights.

The full embedding is computed once by the encoder; each prefix is a slice, so gradients from every
prefix flow into the shared leading dims (the property that makes small prefixes good).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from mrl.config import Config
from mrl.errors import MRLError
from mrl.losses.classification import NestedLinearHeads, TiedLinearHead
from mrl.losses.contrastive import InfoNCE
from mrl.losses.similarity import SimilarityPreserving


class MatryoshkaLoss(nn.Module):
    """`inner_loss(prefix, target, dim_index) -> scalar` is applied to each prefix embeddings[:, :m]."""

    def __init__(self, inner_loss: nn.Module, nesting_dims: list[int], dim_weights: list[float] | None = None):
        super().__init__()
        dims = list(nesting_dims)
        if not dims:
            raise ValueError("MatryoshkaLoss: nesting_dims must not be empty")
        if any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in dims):
            raise ValueError(f"MatryoshkaLoss: nesting_dims must be positive integers, got {dims}")
        if any(b <= a for a, b in pairwise(dims)):
            raise ValueError(f"MatryoshkaLoss: nesting_dims must be strictly increasing, got {dims}")
        weights = [1.0] * len(dims) if dim_weights is None else [float(w) for w in dim_weights]
        if len(weights) != len(dims):
            raise ValueError(f"MatryoshkaLoss: {len(weights)} dim_weights for {len(dims)} nesting_dims")
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(f"MatryoshkaLoss: dim_weights must be finite, >= 0 and not all 0, got {weights}")
        inner_dims = getattr(inner_loss, "nesting_dims", None)
        if inner_dims is not None and list(inner_dims) != dims:
            raise ValueError(f"MatryoshkaLoss: inner loss built for dims {inner_dims}, not {dims}")
        self.inner_loss = inner_loss
        self.nesting_dims = dims
        self.register_buffer("dim_weights", torch.tensor(weights), persistent=False)

    def forward(self, embeddings: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (weighted total, per-dim losses). `embeddings`: (B, d_max) from one encoder pass."""
        if embeddings.shape[-1] < self.nesting_dims[-1]:
            raise ValueError(
                f"MatryoshkaLoss: embedding has {embeddings.shape[-1]} dims, nesting_dims go up to {self.nesting_dims[-1]}"
            )
        per_dim = torch.stack([
            self.inner_loss(embeddings[:, :m], target, i) for i, m in enumerate(self.nesting_dims)
        ])
        return (self.dim_weights * per_dim).sum(), per_dim.detach()

    def get_config_dict(self) -> dict:
        return {
            "inner_loss": type(self.inner_loss).__name__,
            "nesting_dims": self.nesting_dims,
            "dim_weights": self.dim_weights.tolist(),
        }


def build_loss(cfg: Config, num_classes: int) -> MatryoshkaLoss:
    dims = list(cfg.model.nesting_dims)
    objective = cfg.loss.objective
    if objective == "contrastive":
        inner: nn.Module = InfoNCE(cfg.loss.temperature)
    elif objective == "similarity":
        inner = SimilarityPreserving(cfg.loss.similarity_tau, cfg.loss.instance_weight, cfg.loss.temperature)
    elif num_classes < 2:
        raise MRLError(f"loss.objective: {objective} needs labels of at least 2 classes; use contrastive")
    elif objective == "mrl":
        inner = NestedLinearHeads(dims, num_classes)
    else:
        inner = TiedLinearHead(dims, num_classes)
    return MatryoshkaLoss(inner, dims, cfg.loss.dim_weights)

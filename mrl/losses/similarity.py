"""A label-free Matryoshka objective that keeps what a frozen base embedding already knows (after Matryoshka-Adaptor,
Yoon et al., EMNLP 2024): within a batch, each prefix's distribution of cosine similarities (softmax over the other
items at `tau`) matches the base embedding's at full dimension (KL divergence, listwise: the nearest neighbours
weigh most, as in retrieval). An optional InfoNCE term between two views of each item (`instance_weight`) adds
invariance to what the views vary (crop, colour, compression).

Measured on photo footage (bench/photo_video.py, 104 queries): over a frozen EfficientNet-Lite0, this objective with
instance_weight 0.2 gave frame R@1 0.44-0.60 at 16-128 dims where InfoNCE alone gave 0.41-0.47 and PCA 0.38-0.54.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimilarityPreserving(nn.Module):
    def __init__(self, tau: float = 0.05, instance_weight: float = 0.0, temperature: float = 0.1):
        super().__init__()
        if not tau > 0 or not temperature > 0:
            raise ValueError(f"SimilarityPreserving: tau and temperature must be > 0, got {tau}, {temperature}")
        if instance_weight < 0:
            raise ValueError(f"SimilarityPreserving: instance_weight must be >= 0, got {instance_weight}")
        self.tau, self.instance_weight, self.temperature = tau, instance_weight, temperature

    def forward(self, prefix: torch.Tensor, base: torch.Tensor, dim_index: int = 0) -> torch.Tensor:
        """`prefix`: (2B, m) embeddings of two views of B items (view a of every item, then view b); `base`: (2B, D)
        the base embeddings of the same rows (centred by the caller if it wants centred cosines)."""
        n = len(prefix)
        own = torch.eye(n, dtype=torch.bool, device=prefix.device)
        with torch.no_grad():
            b = F.normalize(base.float(), dim=-1)
            target = F.softmax((b @ b.T).masked_fill(own, float("-inf")) / self.tau, dim=1)
        z = F.normalize(prefix, dim=-1)
        log_q = F.log_softmax((z @ z.T).masked_fill(own, float("-inf")) / self.tau, dim=1)
        value = F.kl_div(log_q.masked_fill(own, 0.0), target, reduction="sum") / n
        if self.instance_weight:
            half = n // 2
            logits = z[:half] @ z[half:2 * half].T / self.temperature
            labels = torch.arange(half, device=z.device)
            value = value + self.instance_weight * 0.5 * (
                F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return value

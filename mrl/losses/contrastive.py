"""InfoNCE for label-free pairs: each item's positive is its paired view, every other item in the batch
is a negative. Prefixes are L2-normalized, since the similarity is cosine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"InfoNCE: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, prefix: torch.Tensor, paired: torch.Tensor, dim_index: int = 0) -> torch.Tensor:
        """`prefix`: (B, m) anchors; `paired`: (B, >=m) embeddings of the paired views (truncated here)."""
        a = F.normalize(prefix, dim=-1)
        b = F.normalize(paired[:, : prefix.shape[-1]], dim=-1)
        logits = a @ b.T / self.temperature
        targets = torch.arange(len(a), device=a.device)
        # symmetric: a->b and b->a
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))

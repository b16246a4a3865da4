"""Classification inner losses: cross-entropy through a linear head on each prefix.

Both take (prefix, labels, dim_index) so MatryoshkaLoss can apply them prefix by prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NestedLinearHeads(nn.Module):
    """MRL: an independent linear classifier for each nesting dim m, reading the first m features."""

    def __init__(self, nesting_dims: list[int], num_classes: int):
        super().__init__()
        self.nesting_dims = list(nesting_dims)
        self.heads = nn.ModuleList(nn.Linear(m, num_classes) for m in self.nesting_dims)

    def logits(self, prefix: torch.Tensor, dim_index: int) -> torch.Tensor:
        return self.heads[dim_index](prefix)

    def forward(self, prefix: torch.Tensor, labels: torch.Tensor, dim_index: int) -> torch.Tensor:
        return F.cross_entropy(self.logits(prefix, dim_index), labels)


class TiedLinearHead(nn.Module):
    """MRL-E: one classifier W of shape (classes, d_max); prefix m uses W[:, :m] and the shared bias.

    Tying cuts the head's parameters from sum(m) x C to d_max x C, at about a point of accuracy at
    the smallest sizes (Kusupati et al., 2022).
    """

    def __init__(self, nesting_dims: list[int], num_classes: int):
        super().__init__()
        self.nesting_dims = list(nesting_dims)
        self.head = nn.Linear(self.nesting_dims[-1], num_classes)

    def logits(self, prefix: torch.Tensor, dim_index: int) -> torch.Tensor:
        m = self.nesting_dims[dim_index]
        return F.linear(prefix, self.head.weight[:, :m], self.head.bias)

    def forward(self, prefix: torch.Tensor, labels: torch.Tensor, dim_index: int) -> torch.Tensor:
        return F.cross_entropy(self.logits(prefix, dim_index), labels)

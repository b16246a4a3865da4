"""InfoNCE between queries and their relevant documents, for MatryoshkaLoss over (query, document) pairs.

Query i's positive is document i; every other document in the batch (the other queries' positives, and any mined
hard negatives appended after them) is a negative, except documents with the same id as query i's positive (a
document two queries of one batch share is not a negative of either). Prefixes are L2-normalized: the similarity
is cosine, as in retrieval.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PairInfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.05, symmetric: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"PairInfoNCE: temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.symmetric = symmetric  # also document -> query over the batch's positives (as CLIP does)

    def forward(self, prefix: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor], dim_index: int = 0) -> torch.Tensor:
        """`prefix`: (B, m) queries. `target`: (documents (B + H, >=m), their ids (B + H,)): rows :B are the
        queries' positives, in order; rows B: are extra negatives. Documents are truncated to m here."""
        documents, doc_ids = target
        b = len(prefix)
        q = F.normalize(prefix, dim=-1)
        d = F.normalize(documents[:, : prefix.shape[-1]], dim=-1)
        logits = q @ d.T / self.temperature  # (B, B + H)
        same_doc = doc_ids[None, :] == doc_ids[:b, None]
        same_doc[:, :b].fill_diagonal_(False)  # the positive itself stays
        logits = logits.masked_fill(same_doc, float("-inf"))
        targets = torch.arange(b, device=prefix.device)
        loss = F.cross_entropy(logits, targets)
        if self.symmetric:
            loss = 0.5 * (loss + F.cross_entropy(logits[:, :b].T, targets))
        return loss

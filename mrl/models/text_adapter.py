"""The Matryoshka adapter over a frozen sentence encoder's embeddings.

y = x + W x + b (+ MLP(x)), with x the L2-normalized base embedding and W, b (and the MLP's last layer) starting at
zero: before training the adapter is the identity, so its full-dim output is the normalized base embedding and it
keeps the base's full-dim quality; weight decay pulls it back toward that. A full-rank W can rotate the space, which
is what moving the information into the leading dims needs (a bottleneck MLP alone could not).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrl.config import Config
from mrl.losses import MatryoshkaLoss, PairInfoNCE

ENCODER = "text_adapter"  # checkpoint meta["encoder"]: tells text checkpoints from image/MLP ones


class TextAdapter(nn.Module):
    def __init__(self, dim: int, hidden_dim: int = 0):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.mlp = None
        if hidden_dim:
            self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float(), dim=-1)
        y = x + self.linear(x)
        return y if self.mlp is None else y + self.mlp(x)


def build_adapter_and_loss(cfg: Config, meta: dict[str, Any]) -> tuple[TextAdapter, nn.Module]:
    """An untrained adapter and its MatryoshkaLoss as a checkpoint's saved config and meta describe them (what
    `mrl.checkpoint.load_model` loads a text checkpoint's state into)."""
    loss = MatryoshkaLoss(PairInfoNCE(cfg.text.temperature), list(cfg.model.nesting_dims), cfg.text.dim_weights)
    return TextAdapter(meta["item_shape"][0], meta["hidden_dim"]), loss

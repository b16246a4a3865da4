"""The Matryoshka adapter over a frozen sentence encoder's embeddings, and its checkpoint.

y = x + W x + b (+ MLP(x)), with x the L2-normalized base embedding and W, b (and the MLP's last layer) starting at
zero: before training the adapter is the identity, so its full-dim output is the normalized base embedding and it
keeps the base's full-dim quality; weight decay pulls it back toward that. A full-rank W can rotate the space, which
is what moving the information into the leading dims needs (a bottleneck MLP alone could not).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrl.checkpoint import read_checkpoint
from mrl.config import Config, config_from_dict
from mrl.errors import MRLError

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


def resolve_nesting_dims(dims: list[int], base_dim: int) -> list[int]:
    """text.nesting_dims, or by default 8, 16, 32, ... below the base dim, then the base dim itself."""
    if not dims:
        auto, m = [], 8
        while m < base_dim:
            auto.append(m)
            m *= 2
        return [*auto, base_dim]
    if dims[-1] > base_dim:
        raise MRLError(f"text.nesting_dims: largest dim {dims[-1]} exceeds the encoder's {base_dim} dims")
    return list(dims)


def adapter_config(cfg: Config, base_dim: int, dims: list[int]) -> Config:
    """The config saved in the checkpoint: model.embedding_dim and nesting_dims say what this model outputs."""
    raw = cfg.model_dump(mode="json")
    raw["model"] |= {"embedding_dim": base_dim, "nesting_dims": dims}
    raw["loss"] |= {"dim_weights": None}  # the image model's weights do not apply to these dims
    return config_from_dict(raw, "text adapter config")


@dataclass
class LoadedAdapter:
    adapter: TextAdapter
    config: Config
    meta: dict[str, Any]  # base_dim, text_model, text_model_key, history, ...

    @property
    def nesting_dims(self) -> list[int]:
        return list(self.config.model.nesting_dims)


def build_adapter_and_loss(cfg: Config, meta: dict[str, Any]) -> tuple[TextAdapter, nn.Module]:
    """An untrained adapter and its MatryoshkaLoss as a checkpoint's saved config and meta describe them (what
    `mrl.checkpoint.load_model` loads a text checkpoint's state into)."""
    from mrl.losses import MatryoshkaLoss, PairInfoNCE

    loss = MatryoshkaLoss(PairInfoNCE(cfg.text.temperature), list(cfg.model.nesting_dims), cfg.text.dim_weights)
    return TextAdapter(meta["item_shape"][0], meta["hidden_dim"]), loss


def load_adapter(path: str | Path) -> LoadedAdapter:
    payload = read_checkpoint(path)
    meta = payload["meta"]
    if meta.get("encoder") != ENCODER:
        raise MRLError(f"{path}: not a text adapter checkpoint (train one with `mrl train --data <text dataset>`)")
    cfg = config_from_dict(payload["config"], f"{path} (saved config)")
    adapter = TextAdapter(meta["item_shape"][0], meta["hidden_dim"])
    adapter.load_state_dict(payload["encoder"])
    adapter.eval()
    return LoadedAdapter(adapter, cfg, meta)


def apply_adapter(adapter: nn.Module, x, batch_size: int = 8192):
    """The adapter's (unnormalized) output for a float32 array, in batches, without gradients."""
    import numpy as np

    adapter.eval()
    with torch.no_grad():
        out = [adapter(torch.from_numpy(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.empty((0, x.shape[1]), np.float32)

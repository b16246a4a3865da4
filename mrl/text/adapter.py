"""The text adapter's checkpoint and its use: nesting dims, saved config, loading, applying. (The module itself,
`TextAdapter`, is in mrl.models.text_adapter, where mrl.checkpoint builds it from.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrl.checkpoint import read_checkpoint
from mrl.config import Config, config_from_dict
from mrl.errors import MRLError
from mrl.models.text_adapter import ENCODER, TextAdapter


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
    adapter.eval()
    with torch.no_grad():
        out = [adapter(torch.from_numpy(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.empty((0, x.shape[1]), np.float32)

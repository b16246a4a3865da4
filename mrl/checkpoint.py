"""Checkpoints: weights, the full config and the nesting dims in one file, so a model is self-describing."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mrl.config import Config, config_from_dict
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.losses import MatryoshkaLoss, build_loss
from mrl.models import build_encoder
from mrl.models.text_adapter import ENCODER as TEXT_ADAPTER
from mrl.models.text_adapter import build_adapter_and_loss
from mrl.models.vectors_adapter import ENCODER as VECTORS_ADAPTER
from mrl.models.vectors_adapter import build_vectors_adapter_and_loss

FORMAT = "mrl-checkpoint/1"


@dataclass
class LoadedModel:
    encoder: nn.Module
    loss: MatryoshkaLoss  # holds the classification heads, if the objective has them
    config: Config
    meta: dict[str, Any]  # kind, item_shape, classes, epoch, history, ...

    @property
    def nesting_dims(self) -> list[int]:
        return list(self.config.model.nesting_dims)

    @property
    def heads(self) -> nn.Module | None:
        inner = self.loss.inner_loss
        return inner if hasattr(inner, "logits") else None


def build_model(cfg: Config, kind: str, item_shape: tuple[int, ...], num_classes: int,
                pretrained: bool = False) -> tuple[nn.Module, MatryoshkaLoss]:
    return build_encoder(cfg.model, kind, item_shape, pretrained), build_loss(cfg, num_classes)


def _build_encoder_and_loss(cfg: Config, meta: dict[str, Any]) -> tuple[nn.Module, MatryoshkaLoss]:
    return build_model(cfg, meta["kind"], tuple(meta["item_shape"]), meta["num_classes"])


# The models that are not an encoder of mrl.models.build_encoder, by meta["encoder"]: a builder of the untrained
# module and its loss from the saved config and meta, which the checkpoint's state is loaded into.
MODEL_KINDS = {TEXT_ADAPTER: build_adapter_and_loss, VECTORS_ADAPTER: build_vectors_adapter_and_loss}


def save_checkpoint(path: str | Path, encoder: nn.Module, loss: MatryoshkaLoss, cfg: Config,
                    meta: dict[str, Any], training_state: dict[str, Any] | None = None) -> Path:
    payload = {
        "format": FORMAT,
        "config": cfg.model_dump(mode="json"),
        "nesting_dims": list(cfg.model.nesting_dims),
        "embedding_dim": cfg.model.embedding_dim,
        "meta": meta,
        "encoder": encoder.state_dict(),
        "loss": loss.state_dict(),
        "training_state": training_state,  # optimizer, scheduler, RNG: what resume needs
    }
    path = Path(path)

    def write(f):
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        f.write(buffer.getbuffer())

    atomic_write(path, write)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MRLError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise MRLError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MRLError(f"{path}: not an mrl checkpoint (expected format {FORMAT})")
    return payload


def load_model(path: str | Path) -> LoadedModel:
    """Any mrl checkpoint: an image or vectors encoder, or a text adapter (meta["kind"] "text": it maps base sentence
    embeddings, float32 (N, base dim), to the adapter's)."""
    payload = read_checkpoint(path)
    cfg = config_from_dict(payload["config"], f"{path} (saved config)")
    meta = payload["meta"]
    builder = MODEL_KINDS.get(meta.get("encoder"), _build_encoder_and_loss)
    encoder, loss = builder(cfg, meta)
    encoder.load_state_dict(payload["encoder"])
    loss.load_state_dict(payload["loss"])
    encoder.eval()
    loss.eval()
    return LoadedModel(encoder, loss, cfg, meta)

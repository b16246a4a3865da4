"""Two encoders sized for CPU: a small CNN for images and an MLP adapter over precomputed features."""

from __future__ import annotations

import torch
from torch import nn

from mrl.config import ModelConfig
from mrl.errors import MRLError
from mrl.models.backbones import BackboneEncoder, ResidualHead, build_backbone, model_input_shape


class ConvEncoder(nn.Module):
    """Three conv-BN-ReLU-pool blocks, then a linear projection to the embedding.

    28x28 inputs end as 3x3 maps; flattening them (rather than global pooling) keeps the projection's
    input wider than d_max, so every one of the 512 output dims can carry information.
    """

    def __init__(self, in_channels: int, image_size: int, embedding_dim: int, widths: list[int], dropout: float):
        super().__init__()
        layers, channels, size = [], in_channels, image_size
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels, size = width, size // 2
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout))
        self.project = nn.Linear(channels * size * size, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # uint8 pixels in [0, 255] -> roughly zero-centred floats
        x = x.float().div(255.0).sub(0.5).div(0.5) if x.dtype == torch.uint8 else x
        return self.project(self.features(x))


class MLPAdapter(nn.Module):
    """Turns any backbone's features into Matryoshka embeddings: LayerNorm -> Linear -> GELU -> Linear."""

    def __init__(self, in_dim: int, embedding_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


def build_encoder(cfg: ModelConfig, kind: str, item_shape: tuple[int, ...], pretrained: bool = False) -> nn.Module:
    """Build the encoder for a dataset of `kind` ("images"/"vectors") with items of `item_shape`. A pretrained
    model.backbone loads its weights only with `pretrained` (training); a checkpoint brings its own."""
    if cfg.backbone != "conv":
        return _backbone_encoder(cfg, kind, item_shape, pretrained)
    encoder = cfg.encoder if cfg.encoder != "auto" else ("cnn" if kind == "images" else "mlp")
    if encoder == "cnn":
        if len(item_shape) != 3:
            raise MRLError(f"model.encoder: cnn needs images (C, H, W), got items of shape {item_shape}")
        return ConvEncoder(item_shape[0], item_shape[1], cfg.embedding_dim, list(cfg.cnn_widths), cfg.dropout)
    flat = int(torch.tensor(item_shape).prod())
    return nn.Sequential(nn.Flatten(), MLPAdapter(flat, cfg.embedding_dim, cfg.mlp_hidden_dim, cfg.dropout))


def _backbone_encoder(cfg: ModelConfig, kind: str, item_shape: tuple[int, ...], pretrained: bool) -> nn.Module:
    expected = model_input_shape(cfg.backbone, cfg.image_size)
    if kind != "images" or tuple(item_shape) != expected:
        size = expected[-1]
        raise MRLError(f"model.backbone: {cfg.backbone} takes RGB images of {size}x{size} (shape {list(expected)}), "
                       f"the data has {kind} of shape {list(item_shape)}; ingest with ingest.grayscale: false and "
                       f"ingest.image_size: {size}")
    backbone = build_backbone(cfg.backbone, expected[-1], cfg.weights, pretrained)
    head = ResidualHead(backbone.spec.feature_dim, cfg.embedding_dim, cfg.mlp_hidden_dim, cfg.dropout)
    return BackboneEncoder(backbone, head)

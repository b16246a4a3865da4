"""A frozen backbone's features, computed once and cached on disk, so each epoch trains only the head.

The cache key covers the backbone's weights (a digest of its state_dict), its preprocessing (input shape and
normalisation), the images' bytes and the views drawn (their number and seed): any change computes anew.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mrl.data.artifact import atomic_write
from mrl.data.augment import footage_views
from mrl.models.backbones import PooledFeatures
from mrl.models.onnx import embed_batches, numpy_function
from mrl.progress import progress

FORMAT = "mrl-features/1"  # bump when the views or the pooling change


def state_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(backbone: PooledFeatures, x: np.ndarray, views: int, seed: int) -> str:
    spec = backbone.spec
    h = hashlib.sha256(f"{FORMAT}|{spec.name}|{spec.pixel_mean}|{spec.pixel_std}|{x.shape}|{views}|{seed}".encode())
    h.update(state_digest(backbone).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:32]


def cached_features(backbone: PooledFeatures, x: np.ndarray, views: int, seed: int, cache_dir: str | Path,
                    batch_size: int = 64, log: Callable[[str], None] = print) -> np.ndarray:
    """float16 (N, 1 + views, F): the clean image's pooled features, then those of `views` footage-like views."""
    path = Path(cache_dir) / f"{cache_key(backbone, x, views, seed)}.npy"
    if path.is_file():
        log(f"backbone features: {len(x):,} images x {1 + views} views from the cache ({path})")
        return np.load(path)
    item_shape = tuple(x.shape[1:])
    run = numpy_function(backbone, item_shape)
    clean = embed_batches(run, x, batch_size, "backbone features (clean)")
    out = np.empty((len(x), 1 + views, clean.shape[1]), np.float16)
    out[:, 0] = clean
    # Views are drawn a chunk at a time: never all N x views images in memory at once.
    chunk = max(1, batch_size // max(views, 1))
    for i in progress(range(0, len(x) if views else 0, chunk), "backbone features (views)", "batch"):
        drawn = footage_views(x[i:i + chunk], views, seed + i)
        out[i:i + chunk, 1:] = run(drawn.reshape(-1, *item_shape)).reshape(len(drawn), views, -1)
    atomic_write(path, lambda f: np.save(f, out))
    log(f"backbone features: {len(x):,} images x {1 + views} views computed, cached in {path}")
    return out

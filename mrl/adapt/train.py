"""Training the vectors adapter on base vectors alone, and judging it: neighbour recall@k of each prefix against the
base vectors' exact top k on held-out vectors, beside truncation and PCA of the same vectors."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from mrl.checkpoint import save_checkpoint
from mrl.config import Config
from mrl.errors import MRLError
from mrl.losses import MatryoshkaLoss, SimilarityPreserving
from mrl.metrics import cosine_top_k
from mrl.models.text_adapter import TextAdapter
from mrl.models.vectors_adapter import ENCODER
from mrl.progress import progress
from mrl.text.adapter import resolve_nesting_dims
from mrl.text.evaluate import TextEvalResult, evaluate_retrieval
from mrl.training import TrainResult, lr_lambda


def nesting_dims(configured: list[int], base_dim: int) -> list[int]:
    """adapt.nesting_dims, or 8, 16, 32, ... below the base dim, then the base dim; MRLError past the base dim."""
    try:
        return resolve_nesting_dims(configured, base_dim)
    except MRLError:
        raise MRLError(f"adapt.nesting_dims: largest dim {configured[-1]} exceeds the vectors' {base_dim} dims") from None


def adapter_config(cfg: Config, base_dim: int, dims: list[int]) -> Config:
    """The config saved in the checkpoint: model.embedding_dim and nesting_dims say what the adapter outputs."""
    raw = cfg.model_dump(mode="json")
    raw["model"] |= {"embedding_dim": base_dim, "nesting_dims": dims}
    raw["loss"] |= {"objective": "similarity", "dim_weights": None}
    return Config.model_validate(raw)


class Rotation(nn.Module):
    """y = Q x over the L2-normalized base vector, Q orthogonal: every full-dim cosine is the base's exactly, so
    training can only move information between dims, toward the leading ones."""

    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.linear = orthogonal(nn.Linear(start.shape[1], start.shape[0], bias=False))
        with torch.no_grad():
            self.linear.weight = start  # through the parametrization's right inverse: Q starts as `start`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.normalize(x.float(), dim=-1))

    def as_adapter(self) -> TextAdapter:
        """The trained rotation as the residual adapter that checkpoints and serving load: y = x + (Q - I) x."""
        adapter = TextAdapter(self.linear.weight.shape[1], 0)
        with torch.no_grad():
            adapter.linear.weight.copy_(self.linear.weight - torch.eye(self.linear.weight.shape[1]))
        return adapter.eval()


def principal_directions(base: torch.Tensor) -> torch.Tensor:
    """V^T of the normalized base vectors' SVD (uncentred): the start, each prefix as a projection on the leading
    directions (about PCA's quality), the full dim unchanged."""
    return torch.linalg.svd(base, full_matrices=False)[2]


def train_adapter(cfg: Config, x: np.ndarray, dims: list[int], out_path: str | Path, meta: dict,
                  log: Callable[[str], None] = print) -> TrainResult:
    """Train on base vectors `x` (N, D); a checkpoint (kind vectors, encoder vectors_adapter) after every epoch."""
    ac = cfg.adapt
    torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    base = F.normalize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), dim=1)
    rotation = Rotation(principal_directions(base))
    loss = MatryoshkaLoss(SimilarityPreserving(ac.tau), dims)
    optimizer = torch.optim.AdamW(rotation.parameters(), lr=ac.lr, weight_decay=0.0)
    batch = min(ac.batch_size, len(x))
    steps_per_epoch = math.ceil(len(x) / batch)
    total_steps = steps_per_epoch * ac.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, max(1, int(cfg.train.warmup_fraction * total_steps))))
    meta = meta | {"kind": "vectors", "encoder": ENCODER, "item_shape": [x.shape[1]], "hidden_dim": 0,
                   "num_classes": 0, "classes": [], "epoch": 0, "history": []}
    saved = adapter_config(cfg, x.shape[1], dims)
    started, epoch_loss = time.perf_counter(), float("nan")
    for epoch in range(ac.epochs):
        rotation.train()
        order = torch.randperm(len(base), generator=torch.Generator().manual_seed(cfg.train.seed * 10_007 + epoch))
        epoch_start, total = time.perf_counter(), 0.0
        bar = progress(range(steps_per_epoch), f"epoch {epoch + 1}/{ac.epochs}", "batch")
        for step in bar:
            rows = base[order[step * batch:(step + 1) * batch]]
            value, _ = loss(rotation(rows), rows)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            total += value.item()
            bar.set_postfix(loss=f"{value.item():.4f}", refresh=False)
        bar.close()
        epoch_loss = total / steps_per_epoch
        seconds = time.perf_counter() - epoch_start
        meta["history"].append({"epoch": epoch + 1, "loss": epoch_loss, "seconds": seconds})
        meta["epoch"] = epoch + 1
        save_checkpoint(out_path, rotation.as_adapter(), loss, saved, meta)
        log(f"epoch {epoch + 1}/{ac.epochs}: loss {epoch_loss:.5f}, {seconds:.1f}s ({len(x) / seconds:,.0f} vectors/s)")
    seconds = time.perf_counter() - started
    return TrainResult(Path(out_path), ac.epochs, epoch_loss, seconds, len(x) * ac.epochs / seconds, meta["history"],
                       unit="vectors", objective="similarity")


def evaluate_adapter(adapter: torch.nn.Module, database: np.ndarray, queries: np.ndarray, dims: list[int],
                     k: int) -> TextEvalResult:
    """Neighbour recall@k (and nDCG@k, MRR@k) of held-out `queries` against `database`, relevant = the base vectors'
    exact top k at full dim; for the adapter's prefixes, truncation and PCA (fitted on the database) at every dim."""
    truth = cosine_top_k(queries, database, k)
    results = evaluate_retrieval(queries, database, list(truth), dims, k, database, adapter)
    return TextEvalResult(results, k, database.shape[1], len(queries), len(database))


def below_truncation(result: TextEvalResult, tolerance: float) -> list[int]:
    """The dims where the adapter's neighbour recall trails truncation's by more than `tolerance`."""
    name = f"recall_at_{result.k}"
    return [m for m, row in result.results["adapter"].items()
            if row[name] < result.results["truncated"][m][name] - tolerance]

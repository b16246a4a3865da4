"""Stage 2: train an encoder with MatryoshkaLoss (AdamW, warmup + cosine schedule, seeded, resumable)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrl.checkpoint import build_model, read_checkpoint, save_checkpoint
from mrl.config import Config
from mrl.data import Dataset, load_dataset
from mrl.data.augment import footage_view
from mrl.errors import MRLError
from mrl.models.backbones import BackboneEncoder, backbone_is_frozen, freeze_backbone, preprocess_meta
from mrl.models.features import cached_features
from mrl.progress import progress
from mrl.text.artifact import is_text_dataset
from mrl.training import TrainResult, lr_lambda

EVAL_ITEMS = 2000  # test items scored with the heads after each epoch (a quick signal, not the evaluation)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Cheap label-preserving views. Images: random shift of up to 2 px and horizontal flip.
    Vectors: 10% feature dropout plus small Gaussian noise."""
    if x.dtype == torch.uint8:  # images (B, C, H, W)
        b, _, h, w = x.shape
        padded = F.pad(x, (2, 2, 2, 2))
        dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()  # one shift per batch: cheap
        out = padded[:, :, dy:dy + h, dx:dx + w]
        flip = torch.rand(b, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], out.flip(-1), out)
    keep = (torch.rand(x.shape, generator=generator) > 0.1).float()
    return x * keep + 0.05 * x.std() * torch.randn(x.shape, generator=generator)


@dataclass
class TrainInputs:
    """What the loop feeds: the module trained end to end (the encoder, or a frozen backbone's head over cached
    features), one view per item (`view`), two different views per item (`pair`) and held-out inputs (`val_x`)."""

    forward: nn.Module
    base: Callable[[torch.Tensor], torch.Tensor] | None  # the frozen base embedding of inputs (similarity objective)
    view: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    pair: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    clean: Callable[[torch.Tensor], torch.Tensor]
    val_x: torch.Tensor


def _pixel_inputs(encoder: nn.Module, x: torch.Tensor, val_x: torch.Tensor, footage: bool) -> TrainInputs:
    """Views made per batch: shifts and flips (the small CNN) or footage-like views (a fine-tuned backbone)."""
    def view(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not footage:
            return augment(x[idx], gen)
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        return torch.from_numpy(np.stack([footage_view(item, rng) for item in x[idx].numpy()]))

    base = (lambda v: v.float()) if not footage and x.dtype != torch.uint8 else None  # vectors are their own base
    return TrainInputs(encoder, base, view, lambda idx, gen: (view(idx, gen), view(idx, gen)), lambda idx: x[idx],
                       val_x)


def _feature_inputs(features: torch.Tensor, head: nn.Module, val_features: torch.Tensor) -> TrainInputs:
    """A frozen backbone: features (N, 1 + views, F) cached once; a step picks among the views (0 = the clean image)."""
    n_views = features.shape[1]

    def view(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return features[idx, torch.randint(n_views, (len(idx),), generator=gen)].float()

    def pair(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.randint(n_views, (len(idx),), generator=gen)
        b = (a + torch.randint(1, n_views, (len(idx),), generator=gen)) % n_views  # never the same view twice
        return features[idx, a].float(), features[idx, b].float()

    mean = features[:, 0].float().mean(dim=0)  # the base similarity is the centred features' cosine
    return TrainInputs(head, lambda f: f - mean, view, pair, lambda idx: features[idx, 0].float(), val_features)


def train_inputs(cfg: Config, encoder: nn.Module, train_x: np.ndarray, val_x: np.ndarray,
                 log: Callable[[str], None], fresh: bool = True) -> TrainInputs:
    if not isinstance(encoder, BackboneEncoder):
        return _pixel_inputs(encoder, torch.from_numpy(train_x), torch.from_numpy(val_x), footage=False)
    tc = cfg.train
    freeze_backbone(encoder, tc.freeze)
    if not backbone_is_frozen(tc.freeze):
        return _pixel_inputs(encoder, torch.from_numpy(train_x), torch.from_numpy(val_x), footage=True)
    features = cached_features(encoder.backbone, train_x, tc.views, tc.seed, tc.feature_cache, log=log)
    val = cached_features(encoder.backbone, val_x, 0, tc.seed, tc.feature_cache, log=log)[:, 0]
    features = torch.from_numpy(features)
    if fresh:  # a resumed run keeps its trained head
        encoder.head.init_pca(features[:, 0])
    return _feature_inputs(features, encoder.head, torch.from_numpy(val).float())


def _head_accuracy(encoder, loss, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[str, float]:
    heads = loss.inner_loss
    if not hasattr(heads, "logits") or len(x) == 0:
        return {}
    encoder.eval()
    with torch.no_grad():
        emb = torch.cat([encoder(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        acc = {f"val_head_top1_d{m}": (heads.logits(emb[:, :m], i).argmax(1) == y).float().mean().item()
               for i, m in enumerate(loss.nesting_dims)}
    train_mode(encoder)
    return acc


def train_mode(module: nn.Module) -> None:
    """Training mode, except a backbone's batch norm: it keeps the pretrained statistics (small CPU batches would
    skew them)."""
    module.train()
    if isinstance(module, BackboneEncoder):
        module.backbone.eval()


def _train_split(cfg: Config, ds: Dataset, data_path: str | Path) -> tuple[Dataset, Dataset]:
    """The items trained on (the train split, up to train.max_items) and the test split; labels checked where the
    objective needs them."""
    tc = cfg.train
    train_ds, test_ds = ds.subset("train"), ds.subset("test")
    if len(train_ds) == 0:
        raise MRLError(f"{data_path}: no items in the train split")
    if tc.max_items:
        train_ds = train_ds.head(tc.max_items)
    objective = cfg.loss.objective
    if objective in ("mrl", "mrl_e") and not train_ds.has_labels:
        raise MRLError(f"{data_path}: loss.objective {objective} needs labels on every train item; "
                       "use loss.objective: contrastive or similarity for unlabeled data")
    return train_ds, test_ds


@dataclass
class _Run:
    """A training run: the model and loss trained, their inputs, the optimizer and schedule, and the meta every
    checkpoint saves."""

    encoder: nn.Module
    loss: nn.Module
    inputs: TrainInputs
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    meta: dict


def _start(cfg: Config, ds: Dataset, train_ds: Dataset, test_ds: Dataset, data_path: str | Path, fresh: bool,
           log: Callable[[str], None]) -> _Run:
    """A seeded new run: the model (pretrained weights when `fresh`), its inputs, AdamW, warmup + cosine."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    item_shape = tuple(ds.x.shape[1:])
    encoder, loss = build_model(cfg, ds.kind, item_shape, len(ds.classes), pretrained=fresh)
    inputs = train_inputs(cfg, encoder, train_ds.x, test_ds.x[:EVAL_ITEMS], log, fresh=fresh)
    if cfg.loss.objective == "similarity" and inputs.base is None:
        raise MRLError("loss.objective: similarity keeps a frozen base embedding's similarities; it needs a pretrained "
                       "model.backbone with train.freeze: all, or an embeddings table")
    params = [p for p in encoder.parameters() if p.requires_grad] + list(loss.parameters())
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / tc.batch_size)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, max(1, int(tc.warmup_fraction * total_steps))))
    meta = {"kind": ds.kind, "item_shape": list(item_shape), "num_classes": len(ds.classes),
            "classes": [str(c) for c in ds.classes], "data": str(data_path), "epoch": 0, "history": []}
    if isinstance(encoder, BackboneEncoder):
        meta["preprocess"] = preprocess_meta(encoder, item_shape)
    return _Run(encoder, loss, inputs, optimizer, scheduler, steps_per_epoch, meta)


def _resume(run: _Run, cfg: Config, resume: str | Path, log: Callable[[str], None]) -> int:
    """Load a checkpoint's weights and training state into `run`; returns the epoch it had finished."""
    saved = read_checkpoint(resume)
    for section in ("model", "loss"):
        if saved["config"][section] != cfg.model_dump(mode="json")[section]:
            raise MRLError(f"{resume}: checkpoint's {section} config differs from params; cannot resume")
    if saved["training_state"] is None:
        raise MRLError(f"{resume}: checkpoint holds no training state; cannot resume")
    run.encoder.load_state_dict(saved["encoder"])
    run.loss.load_state_dict(saved["loss"])
    run.optimizer.load_state_dict(saved["training_state"]["optimizer"])
    run.scheduler.load_state_dict(saved["training_state"]["scheduler"])
    torch.set_rng_state(saved["training_state"]["torch_rng"])  # dropout continues the same stream
    run.meta["history"] = saved["meta"]["history"]
    start_epoch = saved["meta"]["epoch"]
    log(f"resumed from {resume} at epoch {start_epoch}")
    return start_epoch


def _step(run: _Run, cfg: Config, idx: torch.Tensor, gen: torch.Generator,
          y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the items `idx`; returns the loss and its per-dim parts."""
    objective, inputs, loss = cfg.loss.objective, run.inputs, run.loss
    if objective == "contrastive":
        emb = inputs.forward(torch.cat(inputs.pair(idx, gen)))
        value, per_dim = loss(emb[:len(idx)], emb[len(idx):])
    elif objective == "similarity":
        views = torch.cat(inputs.pair(idx, gen))
        value, per_dim = loss(inputs.forward(views), inputs.base(views))
    else:
        emb = inputs.forward(inputs.view(idx, gen) if cfg.train.augment else inputs.clean(idx))
        value, per_dim = loss(emb, y[idx])
    run.optimizer.zero_grad(set_to_none=True)
    value.backward()
    run.optimizer.step()
    run.scheduler.step()
    return value, per_dim


def _train_epoch(run: _Run, cfg: Config, epoch: int, n_items: int, y: torch.Tensor) -> tuple[dict, int]:
    """One pass over the training items; returns the epoch's record (loss, per-dim losses, lr, seconds) and the
    number of items seen."""
    tc, steps_per_epoch = cfg.train, run.steps_per_epoch
    # Per-epoch generator: the order and augmentations of epoch e are the same with or without resume.
    gen = torch.Generator().manual_seed(tc.seed * 10_007 + epoch)
    order = torch.randperm(n_items, generator=gen)
    epoch_start, total, per_dim_sum, seen = time.perf_counter(), 0.0, None, 0
    bar = progress(range(steps_per_epoch), f"epoch {epoch + 1}/{tc.epochs}", "batch")
    for step in bar:
        idx = order[step * tc.batch_size:(step + 1) * tc.batch_size]
        value, per_dim = _step(run, cfg, idx, gen, y)
        total += value.item()
        per_dim_sum = per_dim if per_dim_sum is None else per_dim_sum + per_dim
        seen += len(idx)
        rate = (step + 1) * tc.batch_size / (time.perf_counter() - epoch_start)
        bar.set_postfix(loss=f"{value.item():.3f}", items_s=f"{rate:,.0f}", refresh=False)
    bar.close()
    epoch_loss = total / steps_per_epoch
    record = {"epoch": epoch + 1, "loss": epoch_loss, "lr": run.scheduler.get_last_lr()[0],
              "seconds": time.perf_counter() - epoch_start}
    record |= {f"loss_d{m}": float(v) / steps_per_epoch for m, v in zip(run.loss.nesting_dims, per_dim_sum)}
    return record, seen


def _end_epoch(run: _Run, cfg: Config, record: dict, val_y: torch.Tensor, out_path: str | Path, n_items: int,
               log: Callable[[str], None]) -> None:
    """Score the heads on held-out items, add the record to the history, write the checkpoint, log a line."""
    loss, epoch = run.loss, record["epoch"]
    record |= _head_accuracy(run.inputs.forward, loss, run.inputs.val_x, val_y, cfg.evaluate.batch_size)
    run.meta["history"].append(record)
    run.meta["epoch"] = epoch
    save_checkpoint(out_path, run.encoder, loss, cfg, run.meta,
                    {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                     "torch_rng": torch.get_rng_state()})
    top = record.get(f"val_head_top1_d{loss.nesting_dims[-1]}")
    low = record.get(f"val_head_top1_d{loss.nesting_dims[0]}")
    accuracy = f", val top-1 d{loss.nesting_dims[0]}={low:.3f} d{loss.nesting_dims[-1]}={top:.3f}" if top else ""
    log(f"epoch {epoch}/{cfg.train.epochs}: loss {record['loss']:.4f}, {record['seconds']:.1f}s "
        f"({n_items / record['seconds']:,.0f} items/s){accuracy}")


def train(cfg: Config, data_path: str | Path, out_path: str | Path, resume: str | Path | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train on the dataset's train split; write a checkpoint to `out_path` after every epoch."""
    tc = cfg.train
    torch.set_num_threads(tc.num_threads)
    ds: Dataset = load_dataset(data_path)
    train_ds, test_ds = _train_split(cfg, ds, data_path)
    run = _start(cfg, ds, train_ds, test_ds, data_path, resume is None, log)
    start_epoch = 0 if resume is None else _resume(run, cfg, resume, log)

    n_items = len(train_ds)
    y = torch.from_numpy(train_ds.labels)
    val_y = torch.from_numpy(test_ds.labels[:EVAL_ITEMS])
    train_mode(run.inputs.forward)
    run.loss.train()
    started, seen, epoch_loss = time.perf_counter(), 0, float("nan")
    for epoch in range(start_epoch, tc.epochs):
        record, epoch_seen = _train_epoch(run, cfg, epoch, n_items, y)
        seen += epoch_seen
        epoch_loss = record["loss"]
        _end_epoch(run, cfg, record, val_y, out_path, n_items, log)

    seconds = time.perf_counter() - started
    return TrainResult(Path(out_path), tc.epochs, epoch_loss, seconds, seen / seconds if seconds else 0.0,
                       run.meta["history"], objective=cfg.loss.objective)


def train_stage(cfg: Config, data_path: str | Path, out_path: str | Path, resume: str | Path | None = None,
                log: Callable[[str], None] = print) -> TrainResult:
    """The train stage (`mrl train`, the KFP step): the text adapter for a text dataset, else `train`. The one place
    the modality is chosen."""
    if not is_text_dataset(data_path):
        return train(cfg, data_path, out_path, resume, log)
    if resume is not None:
        raise MRLError("--resume: the text adapter trains in minutes and does not resume; train it again")
    from mrl.text.train import train_text_adapter  # here: sentence-transformers adds ~2 s to every import

    return train_text_adapter(cfg, data_path, out_path, log=log)

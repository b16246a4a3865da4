"""Train the text adapter: MatryoshkaLoss over in-batch InfoNCE between queries and their documents.

Both sides go through the same adapter (one model embeds the catalogue and the queries). Each step takes
`text.batch_size` train pairs; every other pair's document is a negative, plus `text.hard_negatives` mined per query
(documents the base embedding ranks high for it, after skipping the `hard_negative_skip` best, which are often
near-synonyms rather than wrong answers). AdamW with warmup and cosine decay, seeded; a checkpoint every epoch
(the same format as `mrl train`'s, meta["encoder"] = "text_adapter").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mrl.checkpoint import save_checkpoint
from mrl.config import Config
from mrl.errors import MRLError
from mrl.losses import MatryoshkaLoss, PairInfoNCE
from mrl.metrics import cosine_top_k
from mrl.models.text_adapter import TextAdapter
from mrl.progress import progress
from mrl.text.adapter import ENCODER, adapter_config, resolve_nesting_dims
from mrl.text.artifact import TextDataset, load_text_dataset
from mrl.text.evaluate import evaluate_retrieval
from mrl.training import TrainResult, lr_lambda

VAL_QUERIES = 1000  # held-out queries scored after each epoch (a quick signal, not the evaluation)


def mine_hard_negatives(td: TextDataset, queries: np.ndarray, count: int, skip: int) -> np.ndarray:
    """(len(queries), count) document indices: the base embedding's ranks skip+1.. for each query, its own relevant
    documents left out."""
    positives: dict[int, set[int]] = {}
    for q, d in zip(*td.pairs("train")):
        positives.setdefault(int(q), set()).add(int(d))
    depth = min(len(td.documents), skip + count + max(map(len, positives.values())))
    ranked = cosine_top_k(td.query_x[queries], td.documents.x, depth)
    out = np.empty((len(queries), count), np.int64)
    for i, (q, row) in enumerate(zip(queries, ranked)):
        others = [d for d in row.tolist() if d not in positives.get(int(q), ())][skip:skip + count]
        out[i] = (others * count)[:count] if others else row[-1]  # tiny corpora: repeat what there is
    return out


def train_text_adapter(cfg: Config, data_path: str | Path, out_path: str | Path,
                       log: Callable[[str], None] = print) -> TrainResult:
    tc = cfg.text
    torch.set_num_threads(cfg.train.num_threads)
    td = load_text_dataset(data_path)
    pair_q, pair_d = td.pairs("train")
    if not len(pair_q):
        raise MRLError(f"{data_path}: no train-split queries to train on")
    dims = resolve_nesting_dims(list(tc.nesting_dims), td.dim)
    saved_cfg = adapter_config(cfg, td.dim, dims)
    torch.manual_seed(cfg.train.seed)
    adapter = TextAdapter(td.dim, tc.hidden_dim)
    if tc.dim_weights is not None and len(tc.dim_weights) != len(dims):
        raise MRLError(f"text.dim_weights: {len(tc.dim_weights)} weights for the {len(dims)} nesting dims {dims}")
    loss = MatryoshkaLoss(PairInfoNCE(tc.temperature), dims, tc.dim_weights)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    batch = min(tc.batch_size, len(pair_q))
    steps_per_epoch = math.ceil(len(pair_q) / batch)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, max(1, int(cfg.train.warmup_fraction * total_steps))))

    negatives = None
    if tc.hard_negatives:
        started = time.perf_counter()
        negatives = torch.from_numpy(mine_hard_negatives(td, pair_q, tc.hard_negatives, tc.hard_negative_skip))
        log(f"mined {tc.hard_negatives} hard negatives for each of {len(pair_q):,} pairs in "
            f"{time.perf_counter() - started:.1f}s")
    val_queries, val_relevant = td.relevant("test")
    val_queries, val_relevant = val_queries[:VAL_QUERIES], val_relevant[:VAL_QUERIES]
    meta = {"kind": "text", "encoder": ENCODER, "item_shape": [td.dim], "hidden_dim": tc.hidden_dim,
            "num_classes": 0, "classes": [], "data": str(data_path), "text_model": td.model,
            "text_model_key": td.model_key, "epoch": 0, "history": []}

    xq, xd = torch.from_numpy(td.query_x), torch.from_numpy(td.documents.x)
    pq, pd = torch.from_numpy(pair_q), torch.from_numpy(pair_d)
    started, epoch_loss = time.perf_counter(), float("nan")
    for epoch in range(tc.epochs):
        adapter.train()
        gen = torch.Generator().manual_seed(cfg.train.seed * 10_007 + epoch)
        order = torch.randperm(len(pq), generator=gen)
        epoch_start, total, per_dim_sum = time.perf_counter(), 0.0, torch.zeros(len(dims))
        bar = progress(range(steps_per_epoch), f"epoch {epoch + 1}/{tc.epochs}", "batch")
        for step in bar:
            idx = order[step * batch:(step + 1) * batch]
            doc_ids = pd[idx] if negatives is None else torch.cat([pd[idx], negatives[idx].reshape(-1)])
            value, per_dim = loss(adapter(xq[pq[idx]]), (adapter(xd[doc_ids]), doc_ids))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            total += value.item()
            per_dim_sum += per_dim
            bar.set_postfix(loss=f"{value.item():.3f}", refresh=False)
        bar.close()
        epoch_loss = total / steps_per_epoch
        record = {"epoch": epoch + 1, "loss": epoch_loss, "lr": scheduler.get_last_lr()[0],
                  "seconds": time.perf_counter() - epoch_start}
        record |= {f"loss_d{m}": float(v) / steps_per_epoch for m, v in zip(dims, per_dim_sum)}
        summary = ""
        if len(val_queries):
            val = evaluate_retrieval(td.query_x[val_queries], td.documents.x, val_relevant, [dims[0], dims[-1]],
                                     tc.eval_k, None, adapter)["adapter"]
            record |= {f"val_ndcg_at_{tc.eval_k}_d{m}": row[f"ndcg_at_{tc.eval_k}"] for m, row in val.items()}
            summary = f", held-out nDCG@{tc.eval_k} " + " ".join(
                f"d{m}={row[f'ndcg_at_{tc.eval_k}']:.3f}" for m, row in val.items())
        meta["history"].append(record)
        meta["epoch"] = epoch + 1
        save_checkpoint(out_path, adapter, loss, saved_cfg, meta)
        log(f"epoch {epoch + 1}/{tc.epochs}: loss {epoch_loss:.4f}, {record['seconds']:.1f}s "
            f"({len(pq) / record['seconds']:,.0f} pairs/s){summary}")
    seconds = time.perf_counter() - started
    return TrainResult(Path(out_path), tc.epochs, epoch_loss, seconds, len(pq) * tc.epochs / seconds, meta["history"],
                       unit="pairs", objective="pairs (in-batch InfoNCE)")

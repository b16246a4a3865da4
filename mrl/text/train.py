"""Train the text adapter: MatryoshkaLoss over the objective `text.objective` names.

- pairs: in-batch InfoNCE between queries and their documents. Each step takes `text.batch_size` train pairs; every
  other pair's document is a negative, plus `text.hard_negatives` mined per query (documents the base embedding ranks
  high for it, after skipping the `hard_negative_skip` best, which are often near-synonyms rather than wrong answers).
- similarity: no labels. The items are every document and every train-split query; each item's top `text.neighbours`
  documents by the base embedding are mined once over the whole corpus (a random batch of 24k documents almost never
  holds them). A step takes `batch_size // (neighbours + 1)` items and their neighbours, and every prefix keeps the
  base's full-dim similarities within that batch and to each item's neighbours, plus a reconstruction term at the
  full dim (mrl.losses.SimilarityPreserving). Held-out queries are never items.
- both: each step adds the similarity loss on such a batch, times `text.similarity_weight`, to the pair loss.

Both sides of every term go through the same adapter (one model embeds the catalogue and the queries). AdamW with
warmup and cosine decay, seeded; a checkpoint every epoch (the same format as `mrl train`'s, meta["encoder"] =
"text_adapter").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrl.checkpoint import save_checkpoint
from mrl.config import Config, TextConfig
from mrl.errors import MRLError
from mrl.losses import MatryoshkaLoss, PairInfoNCE, SimilarityPreserving, SimilarityTarget
from mrl.metrics import cosine_top_k
from mrl.models.text_adapter import TextAdapter
from mrl.progress import progress
from mrl.text.adapter import ENCODER, adapter_config, resolve_nesting_dims
from mrl.text.artifact import TextDataset, load_text_dataset
from mrl.text.evaluate import evaluate_retrieval
from mrl.training import TrainResult, lr_lambda

VAL_QUERIES = 1000  # held-out queries scored after each epoch (a quick signal, not the evaluation)
OBJECTIVES = {"pairs": "pairs (in-batch InfoNCE)",
              "similarity": "similarity (base similarities in-batch and to top-k neighbours, reconstruction)",
              "both": "pairs + similarity"}


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


def mine_neighbours(documents: np.ndarray, others: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The similarity objective's items, base embeddings (N + Q, D): the documents, then `others` (the train queries);
    and each item's k nearest documents by cosine (N + Q, k), document i being item i, never its own neighbour."""
    if len(documents) < 3:
        raise MRLError(f"text.objective: the similarity objective needs at least 3 documents, got {len(documents)}")
    k = min(k, len(documents) - 1)
    items = np.concatenate([documents, others]).astype(np.float32, copy=False)
    ranked = cosine_top_k(items, documents, k + 1)
    not_self = ranked != np.arange(len(items))[:, None]
    first = np.argsort(~not_self, axis=1, kind="stable")[:, :k]  # the entries that are not the item, in rank order
    return items, np.take_along_axis(ranked, first, axis=1)


def build_text_losses(tc: TextConfig, dims: list[int], base_dim: int) -> tuple[MatryoshkaLoss | None, MatryoshkaLoss | None]:
    """(pair loss, similarity loss) of `text.objective`, None where it has no such term."""
    if tc.dim_weights is not None and len(tc.dim_weights) != len(dims):
        raise MRLError(f"text.dim_weights: {len(tc.dim_weights)} weights for the {len(dims)} nesting dims {dims}")
    pair = similarity = None
    if tc.objective != "similarity":
        pair = MatryoshkaLoss(PairInfoNCE(tc.temperature), dims, tc.dim_weights)
    if tc.objective != "pairs":
        if tc.reconstruction_weight and dims[-1] != base_dim:
            raise MRLError(f"text.reconstruction_weight: compares the adapter's full {base_dim} dims with the base, "
                           f"but text.nesting_dims stop at {dims[-1]} (add {base_dim}, or set the weight to 0)")
        inner = SimilarityPreserving(tc.similarity_tau, neighbour_weight=tc.neighbour_weight, neighbours=tc.neighbours,
                                     reconstruction_weight=tc.reconstruction_weight)
        similarity = MatryoshkaLoss(inner, dims, tc.dim_weights)
    return pair, similarity


class _Anchors:
    """Similarity items in a seeded shuffled order, reshuffled whenever the order runs out."""

    def __init__(self, n: int, seed: int):
        self.n, self.gen, self.order, self.pos = n, torch.Generator().manual_seed(seed), torch.empty(0, dtype=torch.long), 0

    def take(self, count: int) -> torch.Tensor:
        if self.pos + count > len(self.order):
            self.order, self.pos = torch.cat([self.order[self.pos:], torch.randperm(self.n, generator=self.gen)]), 0
        self.pos += count
        return self.order[self.pos - count:self.pos]


@dataclass
class _Run:
    adapter: TextAdapter
    pair_loss: MatryoshkaLoss | None
    similarity_loss: MatryoshkaLoss | None
    similarity_weight: float
    xq: torch.Tensor  # query base embeddings
    xd: torch.Tensor  # document base embeddings
    pq: torch.Tensor  # train pairs: query indices
    pd: torch.Tensor  # ... and their documents
    negatives: torch.Tensor | None  # mined hard negatives per pair
    items: torch.Tensor | None  # similarity items' base embeddings
    neighbours: torch.Tensor | None  # (items, k) item indices
    anchors: _Anchors | None
    anchors_per_step: int

    def loss(self, pair_idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's loss and its per-dim parts: the pair loss on `pair_idx`, plus the similarity loss on the next
        anchors and their neighbours."""
        value = per_dim = 0
        if self.pair_loss is not None:
            doc_ids = self.pd[pair_idx]
            if self.negatives is not None:
                doc_ids = torch.cat([doc_ids, self.negatives[pair_idx].reshape(-1)])
            queries = self.adapter(self.xq[self.pq[pair_idx]])
            value, per_dim = self.pair_loss(queries, (self.adapter(self.xd[doc_ids]), doc_ids))
        if self.similarity_loss is not None:
            anchors = self.anchors.take(self.anchors_per_step)
            nb = self.neighbours[anchors]  # (A, k) items
            rows = torch.cat([anchors, nb.reshape(-1)])
            base = self.items[rows]
            where = len(anchors) + torch.arange(nb.numel()).reshape(nb.shape)  # each neighbour's row in the batch
            s_value, s_per_dim = self.similarity_loss(self.adapter(base), SimilarityTarget(base, where))
            value, per_dim = value + self.similarity_weight * s_value, per_dim + self.similarity_weight * s_per_dim
        return value, per_dim


def _prepare(tc: TextConfig, td: TextDataset, dims: list[int], seed: int, log: Callable[[str], None]) -> _Run:
    pair_q, pair_d = td.pairs("train")
    if tc.objective != "similarity" and not len(pair_q):
        raise MRLError(f"no train-split queries to train on (text.objective: {tc.objective} needs pairs)")
    pair_loss, similarity_loss = build_text_losses(tc, dims, td.dim)
    torch.manual_seed(seed)
    adapter = TextAdapter(td.dim, tc.hidden_dim)
    negatives = items = neighbours = anchors = None
    if pair_loss is not None and tc.hard_negatives:
        started = time.perf_counter()
        negatives = torch.from_numpy(mine_hard_negatives(td, pair_q, tc.hard_negatives, tc.hard_negative_skip))
        log(f"mined {tc.hard_negatives} hard negatives for each of {len(pair_q):,} pairs in "
            f"{time.perf_counter() - started:.1f}s")
    if similarity_loss is not None:
        started = time.perf_counter()
        train_queries = np.flatnonzero(td.query_split == "train")
        items_x, nb = mine_neighbours(td.documents.x, td.query_x[train_queries], tc.neighbours)
        items, neighbours, anchors = torch.from_numpy(items_x), torch.from_numpy(nb), _Anchors(len(items_x), seed)
        log(f"mined the top {nb.shape[1]} base neighbours among the {len(td.documents):,} documents of each of "
            f"{len(items_x):,} items ({len(train_queries):,} train queries) in {time.perf_counter() - started:.1f}s")
    return _Run(adapter, pair_loss, similarity_loss, tc.similarity_weight, torch.from_numpy(td.query_x),
                torch.from_numpy(td.documents.x), torch.from_numpy(pair_q), torch.from_numpy(pair_d), negatives,
                items, neighbours, anchors, max(1, tc.batch_size // (tc.neighbours + 1)))


def train_text_adapter(cfg: Config, data_path: str | Path, out_path: str | Path,
                       log: Callable[[str], None] = print) -> TrainResult:
    tc = cfg.text
    torch.set_num_threads(cfg.train.num_threads)
    td = load_text_dataset(data_path)
    dims = resolve_nesting_dims(list(tc.nesting_dims), td.dim)
    saved_cfg = adapter_config(cfg, td.dim, dims)
    run = _prepare(tc, td, dims, cfg.train.seed, log)
    optimizer = torch.optim.AdamW(run.adapter.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # an epoch is a pass over the train pairs; with the similarity objective alone, over the items as anchors
    by_pairs = run.pair_loss is not None
    batch = min(tc.batch_size, len(run.pq)) if by_pairs else run.anchors_per_step
    per_epoch = len(run.pq) if by_pairs else len(run.items)
    steps_per_epoch = math.ceil(per_epoch / batch)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, max(1, int(cfg.train.warmup_fraction * total_steps))))
    val_queries, val_relevant = td.relevant("test")
    val_queries, val_relevant = val_queries[:VAL_QUERIES], val_relevant[:VAL_QUERIES]
    meta = {"kind": "text", "encoder": ENCODER, "item_shape": [td.dim], "hidden_dim": tc.hidden_dim,
            "num_classes": 0, "classes": [], "data": str(data_path), "text_model": td.model,
            "text_model_key": td.model_key, "epoch": 0, "history": []}
    unit = "pairs" if by_pairs else "items"
    started, epoch_loss = time.perf_counter(), float("nan")
    for epoch in range(tc.epochs):
        run.adapter.train()
        gen = torch.Generator().manual_seed(cfg.train.seed * 10_007 + epoch)
        order = torch.randperm(len(run.pq), generator=gen) if by_pairs else None
        epoch_start, total, per_dim_sum = time.perf_counter(), 0.0, torch.zeros(len(dims))
        bar = progress(range(steps_per_epoch), f"epoch {epoch + 1}/{tc.epochs}", "batch")
        for step in bar:
            value, per_dim = run.loss(order[step * batch:(step + 1) * batch] if by_pairs else None)
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
        summary = _validate(run.adapter, td, val_queries, val_relevant, dims, tc.eval_k, record)
        meta["history"].append(record)
        meta["epoch"] = epoch + 1
        save_checkpoint(out_path, run.adapter, run.pair_loss or run.similarity_loss, saved_cfg, meta)
        log(f"epoch {epoch + 1}/{tc.epochs}: loss {epoch_loss:.4f}, {record['seconds']:.1f}s "
            f"({per_epoch / record['seconds']:,.0f} {unit}/s){summary}")
    seconds = time.perf_counter() - started
    return TrainResult(Path(out_path), tc.epochs, epoch_loss, seconds, per_epoch * tc.epochs / seconds,
                       meta["history"], unit=unit, objective=OBJECTIVES[tc.objective])


def _validate(adapter: TextAdapter, td: TextDataset, queries: np.ndarray, relevant: list[np.ndarray], dims: list[int],
              k: int, record: dict) -> str:
    """Held-out nDCG@k at the smallest and the full dim into `record`; the log line's summary."""
    if not len(queries):
        return ""
    val = evaluate_retrieval(td.query_x[queries], td.documents.x, relevant, [dims[0], dims[-1]], k, None,
                             adapter)["adapter"]
    record |= {f"val_ndcg_at_{k}_d{m}": row[f"ndcg_at_{k}"] for m, row in val.items()}
    return f", held-out nDCG@{k} " + " ".join(f"d{m}={row[f'ndcg_at_{k}']:.3f}" for m, row in val.items())

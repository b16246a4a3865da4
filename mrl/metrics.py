"""Retrieval and classification metrics on embedding prefixes. Pure functions over arrays.

Definitions (labels define relevance: a database item is relevant to a query of the same class):
- knn_top1: the nearest database item (cosine) has the query's label. This equals recall@1.
- recall@k: share of queries with at least one relevant item in the top k (the metric-learning Recall@K).
- mAP@k: mean over queries of AP@k = sum_{i<=k} precision@i * rel_i / min(k, number of relevant items).
- linear_top1: test accuracy of a multinomial logistic-regression probe fitted on the train split.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cosine_top_k(queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indices (Q, k) of each query's k most cosine-similar database rows, best first. Exact search."""
    k = min(k, len(database))
    db = F.normalize(torch.from_numpy(np.ascontiguousarray(database, dtype=np.float32)), dim=1)
    q_all = F.normalize(torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)), dim=1)
    out = [torch.topk(q @ db.T, k, dim=1).indices for q in q_all.split(chunk)]
    return torch.cat(out).numpy() if out else np.empty((0, k), dtype=np.int64)


def average_precision_at_k(relevant: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k per query. `relevant`: (Q, >=k) 0/1 in rank order; `n_relevant`: (Q,) relevant items in the database."""
    rel = relevant[:, :k].astype(np.float64)
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    denom = np.minimum(k, n_relevant).astype(np.float64)
    return np.divide((precision_at_i * rel).sum(axis=1), denom, out=np.zeros(len(rel)), where=denom > 0)


def retrieval_metrics(neighbor_labels: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray,
                      map_k: int, recall_ks: list[int]) -> dict[str, float]:
    """Metrics from ranked neighbour labels (Q, K) with K >= max(map_k, recall_ks)."""
    relevant = neighbor_labels == query_labels[:, None]
    classes, counts = np.unique(database_labels, return_counts=True)
    count_of = dict(zip(classes.tolist(), counts.tolist()))
    n_relevant = np.array([count_of.get(int(c), 0) for c in query_labels])
    out = {"knn_top1": float(relevant[:, 0].mean()),
           f"map_at_{map_k}": float(average_precision_at_k(relevant, n_relevant, map_k).mean())}
    for k in recall_ks:
        out[f"recall_at_{k}"] = float(relevant[:, :k].any(axis=1).mean())
    return out


def linear_probe_top1(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                      iterations: int = 100, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Fit softmax regression on standardized features with full-batch L-BFGS; return test top-1."""
    torch.manual_seed(seed)
    xtr = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr = (xtr - mean) / std
    xte = (torch.from_numpy(np.ascontiguousarray(test_x, dtype=np.float32)) - mean) / std
    ytr = torch.from_numpy(train_y.astype(np.int64))
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    probe = torch.nn.Linear(xtr.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=iterations, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(xtr), ytr) + weight_decay * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((probe(xte).argmax(1).numpy() == test_y).mean())

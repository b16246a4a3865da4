"""Per-dim retrieval of held-out queries against the whole document set, with the baselines in the same table.

At every nesting dim m, queries and documents are compared by cosine of their m-dim prefixes (exact search):
  adapter     the trained adapter's output, first m dims
  truncated   the base embedding's first m dims (re-normalized): what you get without training
  pca         the base embedding projected on its first m principal components, fitted on the training documents
              only (those paired with a train-split query)
and the base at its full dim (= truncated at the largest dim). Metrics at k (text.eval_k), averaged over queries:
  recall@k    share of the query's relevant documents in the top k
  nDCG@k      sum over relevant hits of 1 / log2(rank + 1), divided by its best possible value
  MRR@k       1 / rank of the first relevant hit (0 if none in the top k)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.metrics import cosine_top_k
from mrl.plots import plot_per_dim
from mrl.progress import progress
from mrl.text.adapter import apply_adapter, load_adapter
from mrl.text.artifact import TextDataset, load_text_dataset

METHODS = ("adapter", "truncated", "pca")


def ranking_metrics(top: np.ndarray, relevant: list[np.ndarray], k: int) -> dict[str, float]:
    """recall@k, nDCG@k and MRR@k from ranked document indices `top` (Q, >=k) and each query's relevant indices."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg, mrr = np.zeros(len(top)), np.zeros(len(top)), np.zeros(len(top))
    for i, (row, rel) in enumerate(zip(top[:, :k], relevant)):
        hit = np.isin(row, rel)
        recall[i] = hit.sum() / len(rel)
        ndcg[i] = (hit * discount[:len(row)]).sum() / discount[:min(len(rel), k)].sum()
        first = np.flatnonzero(hit)
        mrr[i] = 1.0 / (first[0] + 1) if len(first) else 0.0
    return {f"recall_at_{k}": float(recall.mean()), f"ndcg_at_{k}": float(ndcg.mean()), f"mrr_at_{k}": float(mrr.mean())}


def fit_pca(train_docs: np.ndarray, n_components: int) -> PCA:
    """PCA of the base embedding (centred), at most as many components as the training documents allow."""
    n = min(n_components, len(train_docs), train_docs.shape[1])
    return PCA(n_components=n, svd_solver="full", random_state=0).fit(train_docs)


def evaluate_retrieval(query_x: np.ndarray, doc_x: np.ndarray, relevant: list[np.ndarray], dims: list[int], k: int,
                       train_docs: np.ndarray | None, adapter: torch.nn.Module | None = None) -> dict[str, dict[int, dict]]:
    """{method: {dim: metrics}} for the adapter (if given), truncation and PCA of the base embeddings (PCA fitted on
    `train_docs`; None: the adapter alone)."""
    spaces = {}
    if adapter is not None:
        spaces["adapter"] = (apply_adapter(adapter, query_x), apply_adapter(adapter, doc_x))
    if train_docs is not None:
        pca = fit_pca(train_docs, dims[-1])
        spaces |= {"truncated": (query_x, doc_x), "pca": (pca.transform(query_x), pca.transform(doc_x))}
    out: dict[str, dict[int, dict]] = {}
    for method, (q, d) in spaces.items():
        out[method] = {m: ranking_metrics(cosine_top_k(q[:, :m], d[:, :m], k), relevant, k)
                       for m in progress(dims, f"evaluating {method}", "dim")}
    return out


def train_documents(td: TextDataset) -> np.ndarray:
    """Indices of the documents paired with a train-split query: what the PCA baseline may be fitted on."""
    return np.unique(td.pairs("train")[1])


@dataclass
class TextEvalResult:
    results: dict[str, dict[int, dict]]  # {method: {dim: {metric: value}}}
    k: int
    base_dim: int
    queries: int
    documents: int
    json_path: Path | None = None
    plot_path: Path | None = None

    def per_dim(self) -> dict[int, dict[str, float]]:
        """Rows keyed by dim, as `mrl evaluate` writes them: the adapter's metrics plainly named (ndcg_at_10, what the
        registry gate reads), the baselines prefixed (truncated_ndcg_at_10, pca_ndcg_at_10)."""
        rows: dict[int, dict[str, float]] = {}
        for method, by_dim in self.results.items():
            prefix = "" if method == "adapter" else f"{method}_"
            for m, metrics in by_dim.items():
                rows.setdefault(m, {}).update({prefix + name: value for name, value in metrics.items()})
        return rows


def format_text_table(r: TextEvalResult) -> str:
    """Markdown: one row per dim; recall, nDCG and MRR of each method side by side; the base at full dim last."""
    k, methods = r.k, [m for m in METHODS if m in r.results]
    names = [f"recall_at_{k}", f"ndcg_at_{k}", f"mrr_at_{k}"]
    short = {names[0]: f"R@{k}", names[1]: f"nDCG@{k}", names[2]: f"MRR@{k}"}
    header = "| dims | " + " | ".join(f"{method} {short[n]}" for method in methods for n in names) + " |"
    lines = [header, "|---:|" + "---:|" * (len(methods) * len(names))]
    for m in r.results[methods[0]]:
        lines.append(f"| {m} | " + " | ".join(f"{r.results[method][m][n]:.4f}" for method in methods for n in names) + " |")
    full = r.results["truncated"][max(r.results["truncated"])]
    blank = " | ".join("" for _ in names)
    cells = [" | ".join(f"{full[n]:.4f}" for n in names) if method == "truncated" else blank for method in methods]
    lines.append(f"| base, full {r.base_dim} dims | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_text(model_path: str | Path | None, data_path: str | Path, k: int = 10, max_queries: int | None = None,
                  out_json: str | Path | None = None, out_plot: str | Path | None = None,
                  dims: list[int] | None = None, num_threads: int = 2) -> TextEvalResult:
    """Held-out (test-split) queries against every document, at each of the adapter's nesting dims.
    Without a model, only the baselines (at `dims`)."""
    td = load_text_dataset(data_path)
    adapter = None
    if model_path is not None:
        loaded = load_adapter(model_path)
        if loaded.meta["text_model_key"] != td.model_key or loaded.meta["item_shape"] != [td.dim]:
            raise MRLError(f"{data_path}: embedded by {td.model} (key {td.model_key}), but {model_path} was trained "
                           f"on {loaded.meta['text_model']} (key {loaded.meta['text_model_key']})")
        adapter, dims = loaded.adapter, loaded.nesting_dims
    if not dims:
        raise MRLError("evaluate: give a model or the dims to evaluate the baselines at")
    queries, relevant = td.relevant("test")
    if not len(queries):
        raise MRLError(f"{data_path}: no test-split queries to evaluate")
    if max_queries:
        queries, relevant = queries[:max_queries], relevant[:max_queries]
    torch.set_num_threads(num_threads)
    results = evaluate_retrieval(td.query_x[queries], td.documents.x, relevant, dims, k,
                                 td.documents.x[train_documents(td)], adapter)
    r = TextEvalResult(results, k, td.dim, len(queries), len(td.documents))
    if out_json:
        r.json_path = Path(out_json)
        text = json.dumps({str(m): row for m, row in r.per_dim().items()}, indent=2) + "\n"
        atomic_write(r.json_path, lambda f: f.write(text.encode()))
    if out_plot:
        r.plot_path = Path(out_plot)
        plot_per_dim(r.per_dim(), r.plot_path, f"{Path(model_path or data_path).name}: held-out queries, k={k}")
    return r

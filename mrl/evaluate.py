"""Stage 3: measure a model at every nested size. Also `embed`: write a model's embeddings as a table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from mrl.checkpoint import LoadedModel, load_model
from mrl.config import Config, EvaluateConfig
from mrl.data import Dataset, load_dataset
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.metrics import cosine_top_k, linear_probe_top1, retrieval_metrics
from mrl.models.onnx import embed_batches, numpy_function, prefers_onnx
from mrl.plots import plot_per_dim
from mrl.progress import progress
from mrl.text.artifact import is_text_dataset


@dataclass
class EvalResult:
    per_dim: dict[int, dict[str, float]]
    json_path: Path | None
    plot_path: Path | None
    embeddings: np.ndarray | None = None  # every item's full embedding, in dataset order (the KFP path reuses them)


def embed_items(encoder: nn.Module, x: np.ndarray, batch_size: int, desc: str = "embedding") -> np.ndarray:
    """Every item's full embedding (a pretrained backbone runs under ONNX Runtime: ~5x torch eager on CPU)."""
    encoder.eval()
    if prefers_onnx(encoder):
        batch_size = min(batch_size, 64)  # 224-px images: bigger batches only cost memory
    return embed_batches(numpy_function(encoder, tuple(x.shape[1:])), x, batch_size, desc)


def check_compatible(model: LoadedModel, ds: Dataset, data_path: str | Path) -> None:
    if ds.kind != model.meta["kind"] or list(ds.x.shape[1:]) != list(model.meta["item_shape"]):
        raise MRLError(f"{data_path}: items are {ds.kind} of shape {list(ds.x.shape[1:])}, the model expects "
                       f"{model.meta['kind']} of shape {model.meta['item_shape']}")


def evaluate_embeddings(train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray, test_y: np.ndarray,
                        dims: list[int], cfg: EvaluateConfig, heads: nn.Module | None = None) -> dict[int, dict[str, float]]:
    """Metrics for each prefix size in `dims`. Queries: test items (up to cfg.max_queries); database: train."""
    q = slice(0, cfg.max_queries)
    k = max([cfg.map_k, *cfg.recall_ks])
    per_dim = {}
    for i, m in enumerate(progress(dims, "evaluating dims", "dim")):
        neighbors = cosine_top_k(test_emb[q, :m], train_emb[:, :m], k)
        row = {"linear_top1": linear_probe_top1(train_emb[:, :m], train_y, test_emb[:, :m], test_y,
                                                cfg.probe_epochs)}
        if heads is not None:
            with torch.no_grad():
                logits = heads.logits(torch.from_numpy(test_emb[:, :m]), i)
            row["head_top1"] = float((logits.argmax(1).numpy() == test_y).mean())
        row |= retrieval_metrics(train_y[neighbors], test_y[q], train_y, cfg.map_k, cfg.recall_ks)
        per_dim[m] = row
    return per_dim


def format_table(per_dim: dict[int, dict[str, float]]) -> str:
    metrics = list(next(iter(per_dim.values())))
    widths = [max(8, len(name)) for name in metrics]
    lines = ["  dim | " + " | ".join(f"{name:>{w}}" for name, w in zip(metrics, widths))]
    lines.append("-" * len(lines[0]))
    lines += [f"{m:>5} | " + " | ".join(f"{row[name]:>{w}.4f}" for name, w in zip(metrics, widths))
              for m, row in per_dim.items()]
    return "\n".join(lines)


def evaluate(model_path: str | Path, data_path: str | Path, cfg: EvaluateConfig,
             out_json: str | Path | None = None, out_plot: str | Path | None = None) -> EvalResult:
    model = load_model(model_path)
    ds = load_dataset(data_path)
    check_compatible(model, ds, data_path)
    train_ds, test_ds = ds.subset("train"), ds.subset("test")
    if not (train_ds.has_labels and test_ds.has_labels) or not len(test_ds):
        raise MRLError(f"{data_path}: evaluation needs labeled items in both the train and test split")
    torch.set_num_threads(model.config.train.num_threads)
    every = embed_items(model.encoder, ds.x, cfg.batch_size, "embedding items")  # one pass: one ONNX export
    train_emb, test_emb = every[ds.split == "train"], every[ds.split == "test"]
    per_dim = evaluate_embeddings(train_emb, train_ds.labels, test_emb, test_ds.labels, model.nesting_dims, cfg,
                                  model.heads)
    json_path = plot_path = None
    if out_json:
        json_path = Path(out_json)
        text = json.dumps({str(m): row for m, row in per_dim.items()}, indent=2) + "\n"
        atomic_write(json_path, lambda f: f.write(text.encode()))
    if out_plot:
        plot_path = Path(out_plot)
        plot_per_dim(per_dim, plot_path, f"{Path(model_path).name} ({model.config.loss.objective})")
    return EvalResult(per_dim, json_path, plot_path, every)


@dataclass
class StageEvaluation:
    """What the evaluate stage reports, whatever the modality: rows keyed by dim, the table to show (under `title`),
    the outputs written, and every item's embedding (dataset order; None for a text dataset)."""

    per_dim: dict[int, dict[str, float]]
    table: str
    title: str
    json_path: Path | None
    plot_path: Path | None
    embeddings: np.ndarray | None


def evaluate_stage(model_path: str | Path, data_path: str | Path, cfg: Config, out_json: str | Path | None = None,
                   out_plot: str | Path | None = None) -> StageEvaluation:
    """The evaluate stage (`mrl evaluate`, the KFP step): a text dataset's held-out queries against every document
    (adapter vs truncation and PCA), else `evaluate`. The one place the modality is chosen."""
    if not is_text_dataset(data_path):
        r = evaluate(model_path, data_path, cfg.evaluate, out_json, out_plot)
        return StageEvaluation(r.per_dim, format_table(r.per_dim), "", r.json_path, r.plot_path, r.embeddings)
    from mrl.text.evaluate import evaluate_text, format_text_table  # here: sentence-transformers adds ~2 s

    t = evaluate_text(model_path, data_path, cfg.text.eval_k, cfg.evaluate.max_queries, out_json, out_plot,
                      num_threads=cfg.train.num_threads)
    return StageEvaluation(t.per_dim(), format_text_table(t), f"{t.queries:,} held-out queries against "
                           f"{t.documents:,} documents:", t.json_path, t.plot_path, None)


def embed(model_path: str | Path, data_path: str | Path, out_path: str | Path, batch_size: int = 1024) -> Path:
    """Write the model's full embeddings of every item as a Parquet table (id, label, split, embedding).

    The table is the format `mrl ingest --source embeddings` reads, so it can feed an adapter model.
    """
    model = load_model(model_path)
    ds = load_dataset(data_path)
    check_compatible(model, ds, data_path)
    torch.set_num_threads(model.config.train.num_threads)
    emb = embed_items(model.encoder, ds.x, batch_size)
    labels = [str(ds.classes[i]) if i >= 0 else None for i in ds.labels]
    table = pa.table({
        "id": pa.array(ds.ids.tolist(), pa.string()),
        "label": pa.array(labels, pa.string()),
        "split": pa.array(ds.split.tolist(), pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1]),
    })
    out_path = Path(out_path)
    atomic_write(out_path, lambda f: pq.write_table(table, f))
    return out_path

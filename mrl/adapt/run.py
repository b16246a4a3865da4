"""`mrl adapt`: make an existing set of vectors Matryoshka without re-encoding anything.

Read the vectors (a Milvus collection or a file) -> hold some out -> train the adapter on the rest (no labels:
mrl.adapt.train) -> evaluate every prefix against truncation and PCA of the same vectors -> refuse an adapter that
trails truncation -> register it in MLflow through the usual gate (kind vectors, `mrl.adapts` tag) -> promote a new
collection through the usual path (funnel chosen and verified, alias swap, rollback). The service then passes every
incoming query vector through the adapter.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrl.adapt.source import Vectors
from mrl.adapt.train import below_truncation, evaluate_adapter, nesting_dims, train_adapter
from mrl.checkpoint import load_model
from mrl.config import Config
from mrl.data import Dataset, save_dataset
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.plots import plot_per_dim
from mrl.promote import PromotionResult, promote_index
from mrl.registry import GateDecision, Registration, register_and_promote
from mrl.text.evaluate import TextEvalResult, format_text_table


@dataclass
class AdaptResult:
    vectors: Vectors
    dims: list[int]
    paths: dict[str, Path]  # model, metrics, plot, data
    evaluation: TextEvalResult
    alias: str
    registration: Registration | None = None
    decision: GateDecision | None = None
    promotion: PromotionResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        return format_text_table(self.evaluation)


def default_names(vectors: Vectors) -> tuple[str, str]:
    """(registered model name, serving alias) for vectors of this name: <name>-mrl and <name>_mrl."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", vectors.name).strip("_") or "vectors"
    return f"{base}-mrl", f"{base}_mrl"


def split_rows(n: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): adapt.holdout held out (at most a fifth), seeded; at most adapt.max_train trained."""
    rng = np.random.default_rng(cfg.train.seed)
    order = rng.permutation(n)
    held = np.sort(order[:min(cfg.adapt.holdout, n // 5)])
    train = np.sort(order[len(held):][:cfg.adapt.max_train])
    return train, held


def write_dataset(vectors: Vectors, held: np.ndarray, path: Path) -> Path:
    """The vectors as a dataset artifact (kind vectors; held-out rows are the test split): what promotion indexes."""
    split = np.full(len(vectors.ids), "train", dtype="<U5")
    split[held] = "test"
    if vectors.labels is None:
        labels, classes = np.full(len(vectors.ids), -1, np.int64), np.array([], dtype=str)
    else:
        classes, labels = np.unique(vectors.labels, return_inverse=True)
    return save_dataset(Dataset("vectors", vectors.x, vectors.ids, labels.astype(np.int64), split, classes), path)


def serving_config(cfg: Config, model_name: str, alias: str, dims: list[int]) -> Config:
    """The config promotion runs with: the adapter's registry name and alias, funnel re-ranks that end at the full
    dim, drift prefixes among the adapter's dims, and no floor for a first version (the truncation check replaces it)."""
    full = dims[-1]
    cascades = [list(dict.fromkeys(d if d in dims else full for d in c)) for c in cfg.retrieval.cascades]
    prefixes = [d for d in cfg.drift.prefixes if d in dims]  # [] = the served funnel's dims
    raw = cfg.model_dump(mode="json")
    raw["registry"] |= {"model_name": model_name, "min_first": 0.0}
    raw["retrieval"] |= {"collection_prefix": alias, "cascades": [c for c in cascades if c]}
    raw["drift"] |= {"prefixes": prefixes}
    return Config.model_validate(raw)


def adapt(cfg: Config, vectors: Vectors, out_dir: str | Path, tracking_uri: str | None = None,
          milvus_uri: str | None = None, model_name: str = "", alias: str = "", promote: bool = True,
          log: Callable[[str], None] = print) -> AdaptResult:
    """Train, evaluate, register and (unless `promote` is False) promote an adapter of `vectors`."""
    out_dir = Path(out_dir)
    default_model, default_alias = default_names(vectors)
    model_name, alias = model_name or default_model, alias or default_alias
    dims = nesting_dims(list(cfg.adapt.nesting_dims), vectors.dim)
    train, held = split_rows(len(vectors.ids), cfg)
    if len(held) < 10 or len(train) < cfg.adapt.eval_k * 2:
        raise MRLError(f"{vectors.source}: {len(vectors.ids):,} vectors are too few to adapt and evaluate")
    paths = {"data": out_dir / "vectors.npz", "model": out_dir / "adapter.pt", "metrics": out_dir / "metrics.json",
             "plot": out_dir / "per_dim.png"}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    write_dataset(vectors, held, paths["data"])
    log(f"{vectors.source}: {len(vectors.ids):,} vectors of {vectors.dim} dims; training on {len(train):,}, "
        f"{len(held):,} held out; nesting dims {dims}")
    meta = {"data": str(paths["data"]), "source": vectors.source, "vectors_sha256": vectors.digest(),
            "base_dim": vectors.dim, "eval_k": cfg.adapt.eval_k}
    train_adapter(cfg, vectors.x[train], dims, paths["model"], meta, log)
    seconds["train"] = time.perf_counter() - started

    started = time.perf_counter()
    database = vectors.x[np.setdiff1d(np.arange(len(vectors.ids)), held)]
    evaluation = evaluate_adapter(load_model(paths["model"]).encoder, database, vectors.x[held], dims, cfg.adapt.eval_k)
    per_dim = evaluation.per_dim()
    atomic_write(paths["metrics"], lambda f: f.write((json.dumps({str(m): r for m, r in per_dim.items()}, indent=2)
                                                      + "\n").encode()))
    plot_per_dim(per_dim, paths["plot"], f"{vectors.name}: neighbour recall@{cfg.adapt.eval_k} of held-out vectors")
    seconds["evaluate"] = time.perf_counter() - started
    result = AdaptResult(vectors, dims, paths, evaluation, alias, seconds=seconds)
    log(result.table())
    worse = below_truncation(evaluation, cfg.adapt.tolerance)
    if worse:
        raise MRLError(f"{vectors.source}: the adapter trails truncation of the same vectors at dims {worse} by more "
                       f"than adapt.tolerance {cfg.adapt.tolerance:g}; not registered (see {paths['metrics']})")

    serving = serving_config(cfg, model_name, alias, dims)
    started = time.perf_counter()
    result.registration, result.decision = register_and_promote(paths["model"], paths["metrics"], paths["plot"],
                                                                serving.registry, tracking_uri)
    seconds["register"] = time.perf_counter() - started
    if promote:
        started = time.perf_counter()
        result.promotion = promote_index(serving, paths["data"], tracking_uri, milvus_uri,
                                         result.registration.version, log)
        seconds["promote"] = time.perf_counter() - started
    return result

"""Index promotion: embed the catalogue with the champion model, choose the funnel, build a new versioned
Milvus collection, verify it, then swap the serving alias. Any failure before the swap (an exception, or
the process being killed) leaves the alias on the old, complete collection; a partial collection is dropped
(or, after a kill, dropped by the next promotion of the same version)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl import drift
from mrl.config import Config
from mrl.data import load_dataset
from mrl.errors import MRLError
from mrl.progress import progress
from mrl.registry import CHAMPION, alias_version
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.choose import FunnelCost, candidate_funnels, choose_funnel, measure_funnels, plot_cost_recall
from mrl.retrieval.funnel import exact_search, recall_at_k
from mrl.tracking import client as mlflow_client


@dataclass
class PromotionResult:
    collection: str
    previous: str | None
    rows: int
    funnel: FunnelCost
    verify_recall: float
    dropped: list[str]


@dataclass
class Champion:
    version: str
    run_id: str
    model_uri: str
    nesting_dims: list[int]
    kind: str
    item_shape: list[int]


def resolve_champion(cfg: Config, tracking_uri: str | None, version: str | None = None) -> Champion:
    c = mlflow_client(tracking_uri)
    name = cfg.registry.model_name
    version = version or alias_version(c, name, CHAMPION)
    if version is None:
        raise MRLError(f"{name}: no '{CHAMPION}' model to promote an index for; run the training pipeline first")
    run_id = c.get_model_version(name, version).run_id
    tags = c.get_run(run_id).data.tags
    return Champion(version, run_id, f"models:/{name}/{version}", json.loads(tags["mrl.nesting_dims"]),
                    tags.get("mrl.kind", "images"), json.loads(tags.get("mrl.item_shape", "[]")))


def embed_with(model_uri: str, x: np.ndarray, batch_size: int, desc: str = "embedding catalogue") -> np.ndarray:
    import mlflow
    import torch

    model = mlflow.pytorch.load_model(model_uri)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).numpy()
                               for i in progress(range(0, len(x), batch_size), desc, "batch")]).astype(np.float32)


def verify_collection(index: mi.MilvusFunnelIndex, embeddings: np.ndarray, ids: np.ndarray, queries: np.ndarray,
                      expected_rows: int, target: float, k: int) -> float:
    """Row count, then funnel-through-Milvus recall@k of sample queries against exact full-dim search."""
    rows = mi.row_count(index.client, index.name)
    if rows != expected_rows:
        raise MRLError(f"Milvus collection {index.name}: {rows} rows after insert, expected {expected_rows}")
    truth = exact_search(embeddings, queries, k).indices
    found = index.search_result(queries, {str(i): r for r, i in enumerate(ids)}, k).indices
    recall = recall_at_k(found, truth)
    if recall < target:
        raise MRLError(f"Milvus collection {index.name}: funnel recall@{k} {recall:.4f} on {len(queries)} sample "
                       f"queries is below retrieval.target_recall {target}")
    return recall


def swap_alias(client, alias: str, collection: str, exists: bool) -> None:
    (client.alter_alias if exists else client.create_alias)(collection_name=collection, alias=alias)


def record_funnel(tracking_uri: str | None, cfg: Config, champion: Champion, costs: list[FunnelCost],
                  chosen: FunnelCost) -> None:
    """Chosen funnel and cost-recall curve, with the model version: run artifacts and version tags."""
    c = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "cost_recall.png"
        plot_cost_recall(costs, chosen, cfg.retrieval.target_recall, plot)
        c.log_artifact(champion.run_id, str(plot), "funnel")
    c.log_dict(champion.run_id, {"chosen": chosen.row(), "candidates": [x.row() for x in costs]}, "funnel/cost_recall.json")
    for key, value in {"mrl.funnel": json.dumps(chosen.funnel.to_dict()), "mrl.funnel_recall": f"{chosen.recall:.4f}",
                       "mrl.funnel_speedup_flops": f"{chosen.speedup_flops:.1f}"}.items():
        c.set_model_version_tag(cfg.registry.model_name, champion.version, key, value)


def promote_index(cfg: Config, data_path: str | Path, tracking_uri: str | None = None, milvus_uri: str | None = None,
                  version: str | None = None, log: Callable[[str], None] = print) -> PromotionResult:
    rc = cfg.retrieval
    champion = resolve_champion(cfg, tracking_uri, version)
    unknown = [d for d in cfg.drift.prefixes if d not in champion.nesting_dims]
    if unknown:
        raise MRLError(f"drift.prefixes: {unknown} are not nesting dims of v{champion.version} ({champion.nesting_dims})")
    ds = load_dataset(data_path)
    if ds.kind != champion.kind or (champion.item_shape and list(ds.x.shape[1:]) != champion.item_shape):
        raise MRLError(f"{data_path}: {ds.kind} items of shape {list(ds.x.shape[1:])}, but {cfg.registry.model_name} "
                       f"v{champion.version} embeds {champion.kind} of shape {champion.item_shape}")
    client = mi.connect(milvus_uri)  # before the slow work: an unreachable Milvus fails in seconds
    alias = rc.collection_prefix
    current = mi.alias_target(client, alias)
    name = f"{alias}_v{champion.version}"
    if name == current:
        raise MRLError(f"Milvus alias {alias} already serves {name}; nothing to promote")

    embeddings = embed_with(champion.model_uri, ds.x, cfg.evaluate.batch_size)
    # Choose and verify on the same footing as serving: the whole catalogue, queried with held-out items.
    test = ds.split == "test"
    queries = embeddings[test][: rc.max_queries] if test.any() else embeddings[: rc.max_queries]
    log(f"choosing the funnel on {len(queries)} held-out queries over {len(embeddings)} items")
    costs = measure_funnels(embeddings, queries, candidate_funnels(rc, champion.nesting_dims), rc.k)
    chosen = choose_funnel(costs, rc.target_recall)
    log(f"chosen funnel {chosen.funnel.name()}: recall@{rc.k} {chosen.recall:.4f}, "
        f"{chosen.speedup_flops:.1f}x fewer multiply-adds than exact full-dim search")
    record_funnel(tracking_uri, cfg, champion, costs, chosen)

    if name in client.list_collections():  # left by a killed promotion: never served, safe to rebuild
        client.drop_collection(name)
    info = mi.CollectionInfo(name, cfg.registry.model_name, champion.version, chosen.funnel, champion.nesting_dims,
                             rc.k, current)
    labels = [str(ds.classes[i]) if i >= 0 else "" for i in ds.labels]
    try:
        mi.create_collection(client, info, embeddings.shape[1], rc.index_type, rc.hnsw_m, rc.hnsw_ef_construction)
        bar = progress(None, f"inserting into {name}", "row", total=len(ds))
        mi.insert_rows(client, name, ds.ids, labels, embeddings, chosen.funnel.d0, rc.insert_batch, bar.update)
        bar.close()
        client.load_collection(name)
        sample = queries[: rc.verify_queries]
        recall = verify_collection(mi.MilvusFunnelIndex(client, name, rc.hnsw_ef), embeddings, ds.ids, sample,
                                   len(ds), rc.target_recall, rc.k)
        reference = save_drift_reference(cfg, name, champion, chosen.funnel, embeddings, ds, tracking_uri, log)
        swap_alias(client, alias, name, exists=current is not None)
    except BaseException:
        client.drop_collection(name)  # the alias never pointed here: dropping it loses nothing
        drift.reference_path(cfg, name).unlink(missing_ok=True)
        raise
    log(f"alias {alias} -> {name} ({len(ds)} rows, verified recall@{rc.k} {recall:.4f} on {len(sample)} queries); "
        f"drift reference {reference}")
    dropped = drop_old_collections(client, alias, rc.keep_last)
    for old in dropped:
        drift.reference_path(cfg, old).unlink(missing_ok=True)
    return PromotionResult(name, current, len(ds), chosen, recall, dropped)


def save_drift_reference(cfg: Config, collection: str, champion: Champion, funnel, embeddings: np.ndarray,
                         ds, tracking_uri: str | None, log: Callable[[str], None]) -> Path | None:
    """The catalogue sample and calibrated thresholds `mrl drift` compares windows with, one per collection
    (so a rolled-back index is checked against its own reference). Written to drift.reference_dir and logged
    to the model version's run (drift/<collection>.npz), where checks on other machines fetch it."""
    if len(embeddings) < 4 * cfg.drift.min_window:
        log(f"catalogue of {len(embeddings)} rows: too small for a drift reference (mrl drift will need --reference)")
        return None
    prefixes = list(cfg.drift.prefixes) or sorted({funnel.d0, *funnel.rerank_dims})
    meta = {"collection": collection, "model_name": cfg.registry.model_name, "model_version": champion.version,
            "model_uri": champion.model_uri}
    ref = drift.build_reference(embeddings, ds.labels, [str(c) for c in ds.classes], prefixes, cfg.drift, meta, log)
    path = drift.save_reference(ref, drift.reference_path(cfg, collection))
    mlflow_client(tracking_uri).log_artifact(champion.run_id, str(path), "drift")
    return path


def drop_old_collections(client, alias: str, keep_last: int) -> list[str]:
    """Keep the newest `keep_last` versioned collections, and always the served one and its previous."""
    serving = mi.alias_target(client, alias)
    protected = {serving, mi.CollectionInfo.read(client, serving).previous} if serving else set()
    names = mi.versioned_collections(client, alias)
    dropped = [n for n in names[: max(0, len(names) - keep_last)] if n not in protected]
    for n in dropped:
        client.drop_collection(n)
    return dropped


def rollback_index(cfg: Config, milvus_uri: str | None = None) -> tuple[str, str]:
    """Point the alias back at the collection the current one replaced. Returns (from, to)."""
    client = mi.connect(milvus_uri)
    alias = cfg.retrieval.collection_prefix
    current = mi.alias_target(client, alias)
    if current is None:
        raise MRLError(f"Milvus alias {alias} does not exist; nothing to roll back")
    previous = mi.CollectionInfo.read(client, current).previous
    if not previous or previous not in client.list_collections():
        raise MRLError(f"Milvus alias {alias} -> {current}: no previous collection to roll back to")
    client.alter_alias(collection_name=previous, alias=alias)
    return current, previous

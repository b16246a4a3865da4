"""Index promotion: embed the catalogue with the champion model, choose the funnel, build a new versioned
Milvus collection, verify it, then swap the serving alias. Any failure before the swap (an exception, or
the process being killed) leaves the alias on the old, complete collection; a partial collection is dropped
(or, after a kill, dropped by the next promotion of the same version)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mrl import drift
from mrl.champion import Champion, embed_with, resolve_champion
from mrl.config import Config
from mrl.data import Dataset, load_dataset
from mrl.data.thumbnails import item_thumbnails
from mrl.errors import MRLError
from mrl.progress import progress
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.backends import open_index, resolve_backend
from mrl.retrieval.choose import FunnelCost, candidate_funnels, choose_funnel, measure_funnels, plot_cost_recall
from mrl.retrieval.funnel import Funnel, exact_search
from mrl.retrieval.lifecycle import drop_old_collections
from mrl.retrieval.snapshot import remove_snapshot, snapshot_root
from mrl.text.artifact import TEXT_FIELD, TextDataset, is_text_dataset, load_text_dataset
from mrl.tracking import client as mlflow_client
from mrl.tracking import file_sha256


@dataclass
class PromotionResult:
    collection: str
    previous: str | None
    rows: int
    funnel: FunnelCost
    verify_recall: float
    dropped: list[str]

    def to_dict(self) -> dict:
        """The promotion record (`mrl index promote --out`, the KFP step's `promotion` artifact)."""
        return {"collection": self.collection, "previous": self.previous, "rows": self.rows,
                "funnel": self.funnel.row(), "verify_recall": self.verify_recall, "dropped": self.dropped}


def verify_collection(client, collection: str, expected_rows: int, rc, backend: str, query_ids: list[str],
                      queries: np.ndarray, truth: list[list[str]], log: Callable[[str], None] = print,
                      snapshots: Path | None = None) -> float:
    """Row count, then recall@k of sample queries through the backend that will serve the collection (the memory
    backend reads it back from Milvus), against exact full-dim search (`truth`: the catalogue's true top-k ids per
    query, without the query itself). Each query's own id is dropped from its hits: it is a catalogue item, and
    finding itself is a free hit. With `snapshots` (memory backend), the verified index is then saved there for
    replicas to start from (mrl.retrieval.snapshot)."""
    rows = mi.row_count(client, collection)
    if rows != expected_rows:
        raise MRLError(f"Milvus collection {collection}: {rows} rows after insert, expected {expected_rows}")
    client.load_collection(collection)
    k = rc.k
    index = open_index(client, collection, rc, backend, log)  # read back from Milvus: what is stored is verified
    hits, _ = index.search(queries, k + 1)
    found = [[h["id"] for h in row if h["id"] != own][:k] for row, own in zip(hits, query_ids)]
    recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
    if recall < rc.target_recall:
        raise MRLError(f"Milvus collection {collection}: funnel recall@{k} {recall:.4f} on {len(queries)} "
                       f"sample queries ({backend} backend) is below retrieval.target_recall {rc.target_recall}")
    if snapshots is not None and hasattr(index, "write_snapshot"):
        started = time.perf_counter()
        log(f"snapshot {index.write_snapshot(snapshots)} written in {time.perf_counter() - started:.1f}s")
    return recall


def record_funnel(tracking_uri: str | None, cfg: Config, champion: Champion, costs: list[FunnelCost],
                  chosen: FunnelCost) -> None:
    """Chosen funnel and cost-recall curve, with the model version: run artifacts and version tags."""
    c = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "cost_recall.png"
        plot_cost_recall(costs, chosen, cfg.retrieval.target_recall, plot)
        c.log_artifact(champion.run_id, str(plot), "funnel")
    c.log_dict(champion.run_id, {"chosen": chosen.row(), "candidates": [x.row() for x in costs]}, "funnel/cost_recall.json")
    c.log_text(champion.run_id, funnel_table(costs, chosen, cfg.retrieval.k), "funnel/candidates.md")
    for key, value in {"mrl.funnel": json.dumps(chosen.funnel.to_dict()), "mrl.funnel_recall": f"{chosen.recall:.4f}",
                       "mrl.funnel_p50_ms": f"{chosen.latency_ms:.3f}",
                       "mrl.funnel_bytes_per_item": f"{chosen.bytes_per_item:.0f}",
                       "mrl.funnel_speedup_flops": f"{chosen.speedup_flops:.1f}"}.items():
        c.set_model_version_tag(cfg.registry.model_name, champion.version, key, value)


def funnel_table(costs: list[FunnelCost], chosen: FunnelCost, k: int) -> str:
    """The measured candidates as a Markdown table, fastest first."""
    lines = [f"| d0 | k0 | cascade | precision | recall@{k} | p50 ms | p99 ms | bytes/item | chosen |",
             "|---:|---:|---|---|---:|---:|---:|---:|---|"]
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for c in sorted(costs, key=lambda c: (c.latency_ms is None, c.latency_ms or 0, -c.recall)):
        cascade = " -> ".join(str(dim) for dim, _ in c.funnel.stages(k)[1:]) or "-"
        lines.append(f"| {c.funnel.d0} | {c.funnel.k0} | {cascade} | {c.funnel.quant} | {c.recall:.4f} | "
                     f"{ms(c.latency_ms)} | {ms(c.p99_ms)} | {c.bytes_per_item:.0f} | {'**yes**' if c is chosen else ''} |")
    lines.append("\n(-: below the target recall, not timed. Larger k0 of a kind that reached the target are not measured.)")
    return "\n".join(lines) + "\n"


@dataclass
class Plan:
    """What the steps of one promotion share (JSON between pipeline steps): the new collection, its funnel,
    and the held-out rows whose recall through Milvus is verified before the alias moves."""

    collection: str
    previous: str | None
    champion: Champion
    chosen: dict  # FunnelCost.row() of the chosen funnel
    rows: int  # catalogue rows the collection must end up with
    verify_rows: list[int]  # dataset rows of the verification queries (a text dataset's: rows of its queries)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = json.loads(text)
        return cls(**(d | {"champion": Champion(**d["champion"])}))

    @property
    def funnel(self) -> FunnelCost:
        row = {k: v for k, v in self.chosen.items() if k not in ("funnel", "funnel_spec", "precision")}
        return FunnelCost(Funnel.from_dict(self.chosen["funnel_spec"]), **row)


def promote_index(cfg: Config, data_path: str | Path, tracking_uri: str | None = None, milvus_uri: str | None = None,
                  version: str | None = None, log: Callable[[str], None] = print) -> PromotionResult:
    """The whole promotion in this process: plan, insert the catalogue as one shard, verify and swap."""
    embeddings: dict[str, np.ndarray] = {}
    plan = plan_promotion(cfg, data_path, tracking_uri, milvus_uri, version, log, embeddings)
    try:
        partial = insert_shard(cfg, plan, data_path, tracking_uri, milvus_uri, 0, 1, embeddings.get("all"))
        return finish_promotion(cfg, plan, data_path, tracking_uri, milvus_uri, [partial], embeddings.get("all"), log)
    except BaseException:
        abandon_promotion(cfg, plan, milvus_uri)
        raise


def plan_promotion(cfg: Config, data_path: str | Path, tracking_uri: str | None, milvus_uri: str | None,
                   version: str | None, log: Callable[[str], None] = print,
                   keep: dict[str, np.ndarray] | None = None, catalogue: np.ndarray | None = None) -> Plan:
    """Check everything, choose the funnel, save the drift reference and create the empty collection.

    The funnel is chosen on up to retrieval.choose_sample catalogue rows (all of them, below that), queried with
    held-out items. `keep`, if given, receives the catalogue's embeddings when they were all computed here.
    `catalogue`: the whole catalogue already embedded by this version (the KFP pipeline's evaluate step embedded it
    with the checkpoint that register just made champion), so it is not embedded again."""
    rc = cfg.retrieval
    champion = resolve_champion(cfg, tracking_uri, version)
    unknown = [d for d in cfg.drift.prefixes if d not in champion.nesting_dims]
    if unknown:
        raise MRLError(f"drift.prefixes: {unknown} are not nesting dims of v{champion.version} ({champion.nesting_dims})")
    ds = load_dataset(data_path)
    text = text_queries(data_path)
    kind = "text" if text is not None else ds.kind  # a text dataset's catalogue: its documents' base embeddings
    if kind != champion.kind or (champion.item_shape and list(ds.x.shape[1:]) != champion.item_shape):
        raise MRLError(f"{data_path}: {kind} items of shape {list(ds.x.shape[1:])}, but {cfg.registry.model_name} "
                       f"v{champion.version} embeds {champion.kind} of shape {champion.item_shape}")
    client = mi.connect(milvus_uri)  # before the slow work: an unreachable Milvus fails in seconds
    alias = rc.collection_prefix
    name = f"{alias}_v{champion.version}"
    mi.acquire_promotion_lock(client, alias, name, log)  # held until the alias swap, or released by abandon
    plan = None
    try:
        current = mi.alias_target(client, alias)
        if current is not None and mi.CollectionInfo.read(client, current).model_version == champion.version:
            # also a retiered collection of this version (<name>_t<n>), whose rollback target is `name` itself
            raise MRLError(f"Milvus alias {alias} already serves {cfg.registry.model_name} v{champion.version} "
                           f"({current}); nothing to promote")

        # Choose on the same footing as serving: the index type served, over the catalogue (or a large sample) without
        # the queries, so that no query finds itself (a free hit that would inflate recall).
        backend = resolve_backend(rc.serve_backend, milvus_uri, client)
        sample, embeddings, query_rows, queries, searched = embed_for_choice(cfg, champion, ds, text, tracking_uri,
                                                                            catalogue)
        if keep is not None and len(sample) == len(ds):
            keep["all"] = embeddings
        # Milvus stores float vectors only: quantized shortlists are candidates where the memory backend serves.
        candidates = candidate_funnels(rc, champion.nesting_dims, None if backend == "memory" else ["float32"])
        log(f"choosing the funnel for the {backend} backend ({rc.index_type}) among {len(candidates)} candidates on "
            f"{len(queries)} held-out queries over {len(searched)} of {len(ds)} items")
        bar = progress(None, "measuring funnels", "funnel", total=len(candidates))
        costs = measure_funnels(searched, queries, candidates, rc, progress=bar.update)
        bar.close()
        chosen = choose_funnel(costs, rc.target_recall)
        exact = costs[0]  # candidate_funnels puts exact full-dim search first
        log(f"chosen funnel {chosen.funnel.name()}: recall@{rc.k} {chosen.recall:.4f}, p50 {chosen.latency_ms:.2f} ms "
            f"({exact.latency_ms / chosen.latency_ms:.0f}x faster than exact full-dim search, measured), "
            f"shortlist {chosen.bytes_per_item:.0f} bytes/item")
        record_funnel(tracking_uri, cfg, champion, costs, chosen)

        if name in client.list_collections():  # left by a killed promotion: never served, safe to rebuild
            client.drop_collection(name)
        plan = Plan(name, current, champion, chosen.row(), len(ds), query_rows[: rc.verify_queries].tolist())
        if text is None:
            save_drift_reference(cfg, name, champion, chosen.funnel, embeddings, ds.labels[sample], ds.classes,
                                 tracking_uri, log)
        else:  # the service logs query embeddings: compare them with the dataset's queries, not with the documents
            every_query = embed_with(champion.model_uri, text.query_x, cfg.evaluate.batch_size, "embedding queries",
                                     tracking_uri)
            save_drift_reference(cfg, name, champion, chosen.funnel, every_query, np.full(len(every_query), -1), [],
                                 tracking_uri, log)
        info = mi.CollectionInfo(name, cfg.registry.model_name, champion.version, chosen.funnel,
                                 champion.nesting_dims, rc.k, current, file_sha256(data_path),
                                 adapts=champion.adapts or None)
        mi.create_collection(client, info, embeddings.shape[1], rc.index_type, rc.hnsw_m, rc.hnsw_ef_construction,
                             extra_fields(cfg, ds, text))
    except BaseException:
        if plan is None:
            mi.release_promotion_lock(client, alias, name)
        else:
            abandon_promotion(cfg, plan, milvus_uri)
        raise
    return plan


def save_catalogue(path: str | Path, embeddings: np.ndarray | None) -> int:
    """Write the plan's catalogue embeddings (.npy) for the insert steps, or an empty array when the plan embedded
    only a sample (each shard then embeds its own rows). Returns the rows written."""
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a path
        np.save(f, np.empty((0, 0), dtype=np.float32) if embeddings is None else embeddings)
    return 0 if embeddings is None else len(embeddings)


def load_catalogue(path: str | Path) -> np.ndarray | None:
    """`save_catalogue`'s array, memory-mapped (a shard reads only its rows); None when it holds no rows."""
    catalogue = np.load(path, mmap_mode="r")
    return catalogue if len(catalogue) else None


def stores_thumbnails(cfg: Config, ds) -> bool:
    return cfg.retrieval.thumbnails and ds.kind == "images"


MAX_TEXT_BYTES = 65_535  # Milvus VARCHAR limit


def extra_fields(cfg: Config, ds: Dataset, text: TextDataset | None) -> dict[str, str] | None:
    """The collection's fields beyond id, label and vectors: images' thumbnails, text documents' texts."""
    if text is not None:
        return {TEXT_FIELD: "text"}
    return {"thumbnail": "text"} if stores_thumbnails(cfg, ds) else None


def stored_texts(texts: np.ndarray) -> list[str]:
    """Documents' texts as the collection stores them: cut to the VARCHAR limit on a character boundary."""
    return [t.encode()[:MAX_TEXT_BYTES].decode("utf-8", "ignore") for t in texts.astype(str).tolist()]


def text_queries(data_path: str | Path) -> TextDataset | None:
    """A text dataset (whose held-out queries are its own, not catalogue rows); None for any other dataset."""
    return load_text_dataset(data_path) if is_text_dataset(data_path) else None


def held_out_query_rows(ds: Dataset, text: TextDataset | None, limit: int) -> np.ndarray:
    """Rows of the queries the funnel is chosen and verified with: a text dataset's test-split queries (rows of its
    queries; all of them if none is held out), else the catalogue's test split (else its first rows)."""
    split = ds.split if text is None else text.query_split
    test = np.flatnonzero(split == "test")
    return (test if len(test) else np.arange(len(split)))[:limit]


def embed_for_choice(cfg: Config, champion: Champion, ds: Dataset, text: TextDataset | None,
                     tracking_uri: str | None, catalogue: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sample, its embeddings, query rows, query embeddings, searched embeddings): the catalogue rows the funnel is
    chosen on (all, or retrieval.choose_sample of them) and the held-out queries. Catalogue queries are catalogue rows,
    taken out of what is searched so that none finds itself; a text dataset's queries are not catalogue rows, so the
    whole sample is searched."""
    rc = cfg.retrieval
    query_rows = held_out_query_rows(ds, text, rc.max_queries)
    own = query_rows if text is None else np.empty(0, np.int64)  # catalogue rows that are queries
    sample = np.arange(len(ds))
    if len(ds) > rc.choose_sample:
        picked = np.random.default_rng(0).choice(np.setdiff1d(sample, own), rc.choose_sample - len(own), replace=False)
        sample = np.sort(np.concatenate([own, picked]))
    if catalogue is not None and len(catalogue) == len(ds):
        embeddings = np.asarray(catalogue[sample], dtype=np.float32)
    else:
        embeddings = embed_with(champion.model_uri, ds.x[sample], cfg.evaluate.batch_size, tracking_uri=tracking_uri)
    if text is None:
        return (sample, embeddings, query_rows, embeddings[np.searchsorted(sample, query_rows)],
                embeddings[~np.isin(sample, query_rows)])
    queries = embed_with(champion.model_uri, text.query_x[query_rows], cfg.evaluate.batch_size, "embedding queries",
                         tracking_uri)
    return sample, embeddings, query_rows, queries, embeddings


def verification_queries(cfg: Config, plan: Plan, data_path: str | Path, ds: Dataset, catalogue: np.ndarray | None,
                         tracking_uri: str | None) -> tuple[list[str], np.ndarray]:
    """(own ids, embeddings) of the plan's verification queries. A catalogue row's own id is dropped from its hits (a
    free hit); a text query is no catalogue item and drops nothing (own id "")."""
    text = text_queries(data_path)
    if text is not None:
        return [""] * len(plan.verify_rows), embed_with(plan.champion.model_uri, text.query_x[plan.verify_rows],
                                                        cfg.evaluate.batch_size, "queries", tracking_uri)
    if catalogue is None:
        queries = embed_with(plan.champion.model_uri, ds.x[plan.verify_rows], cfg.evaluate.batch_size, "queries",
                             tracking_uri)
    else:
        queries = np.asarray(catalogue[plan.verify_rows])
    return [str(i) for i in ds.ids[plan.verify_rows]], queries


def shard_rows(n: int, shard: int, shards: int) -> np.ndarray:
    return np.array_split(np.arange(n), shards)[shard]


def insert_shard(cfg: Config, plan: Plan, data_path: str | Path, tracking_uri: str | None, milvus_uri: str | None,
                 shard: int, shards: int, catalogue: np.ndarray | None = None) -> dict:
    """Embed (unless `catalogue`, the whole catalogue's embeddings from the plan, is given) and insert one
    contiguous shard of the catalogue. Returns the shard's exact top-k for the verification queries
    ({"ids", "scores"}), which `finish_promotion` merges into the whole catalogue's."""
    rc = cfg.retrieval
    ds = load_dataset(data_path)
    rows = shard_rows(len(ds), shard, shards)
    if catalogue is None:
        embeddings = embed_with(plan.champion.model_uri, ds.x[rows], cfg.evaluate.batch_size,
                                f"embedding shard {shard + 1}/{shards}", tracking_uri)
    else:
        embeddings = np.asarray(catalogue[rows])
    _, queries = verification_queries(cfg, plan, data_path, ds, catalogue, tracking_uri)
    labels = [str(ds.classes[i]) if i >= 0 else "" for i in ds.labels[rows]]
    client = mi.connect(milvus_uri)
    bar = progress(None, f"inserting into {plan.collection}", "row", total=len(rows))
    extra = None
    if stores_thumbnails(cfg, ds):
        bar = progress(None, "thumbnails", "image", total=len(rows))
        extra = {"thumbnail": item_thumbnails(ds.x[rows], bar.update)}
        bar.close()
    elif is_text_dataset(data_path):
        extra = {TEXT_FIELD: stored_texts(load_text_dataset(data_path).doc_texts[rows])}
    mi.insert_rows(client, plan.collection, ds.ids[rows], labels, embeddings, plan.funnel.funnel.d0, rc.insert_batch,
                   bar.update, extra)
    bar.close()
    top = exact_search(embeddings, queries, min(rc.k + 1, len(rows)))  # + 1: the query itself, dropped later
    return {"ids": ds.ids[rows][top.indices].tolist(), "scores": top.scores.tolist()}


def finish_promotion(cfg: Config, plan: Plan, data_path: str | Path, tracking_uri: str | None, milvus_uri: str | None,
                     partials: list[dict], catalogue: np.ndarray | None = None,
                     log: Callable[[str], None] = print) -> PromotionResult:
    """Verify the full collection (row count; funnel recall through Milvus against the merged exact top-k),
    then swap the serving alias and drop collections beyond keep_last."""
    rc = cfg.retrieval
    client = mi.connect(milvus_uri)
    ds = load_dataset(data_path)
    query_ids, queries = verification_queries(cfg, plan, data_path, ds, catalogue, tracking_uri)
    ids = np.concatenate([np.asarray(p["ids"], dtype=object) for p in partials], axis=1)
    scores = np.concatenate([np.asarray(p["scores"]) for p in partials], axis=1)
    ranked = np.take_along_axis(ids, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    truth = [[i for i in row if i != own][: rc.k] for row, own in zip(ranked.tolist(), query_ids)]
    backend = resolve_backend(rc.serve_backend, milvus_uri, client)
    snapshots = snapshot_root(rc.snapshot_dir, milvus_uri)
    recall = verify_collection(client, plan.collection, plan.rows, rc, backend, query_ids, queries, truth, log,
                               snapshots)
    alias = rc.collection_prefix
    mi.swap_alias(client, alias, plan.collection, expected=plan.previous)
    mi.release_promotion_lock(client, alias, plan.collection)
    log(f"alias {alias} -> {plan.collection} ({plan.rows} rows, verified recall@{rc.k} {recall:.4f} on {len(queries)} "
        f"queries); drift reference {drift.reference_path(cfg, plan.collection)}")
    dropped = drop_old_collections(client, alias, rc.keep_last, rc.drop_grace_s, log, snapshots)
    for old in dropped:
        drift.reference_path(cfg, old).unlink(missing_ok=True)
    return PromotionResult(plan.collection, plan.previous, plan.rows, plan.funnel, recall, dropped)


def abandon_promotion(cfg: Config, plan: Plan, milvus_uri: str | None) -> None:
    """Drop what a failed promotion built and release its lock. The alias never pointed at it, so nothing served is
    lost."""
    client = mi.connect(milvus_uri)
    alias = cfg.retrieval.collection_prefix
    if mi.alias_target(client, alias) != plan.collection:
        client.drop_collection(plan.collection)
        drift.reference_path(cfg, plan.collection).unlink(missing_ok=True)
        remove_snapshot(snapshot_root(cfg.retrieval.snapshot_dir, milvus_uri), plan.collection)
    mi.release_promotion_lock(client, alias, plan.collection)


def save_drift_reference(cfg: Config, collection: str, champion: Champion, funnel, embeddings: np.ndarray,
                         labels: np.ndarray, classes, tracking_uri: str | None, log: Callable[[str], None]) -> Path | None:
    """The catalogue sample and calibrated thresholds `mrl drift` compares windows with, one per collection
    (so a rolled-back index is checked against its own reference). Written to drift.reference_dir and logged
    to the model version's run (drift/<collection>.npz), where checks on other machines fetch it."""
    if len(embeddings) < 4 * cfg.drift.min_window:
        log(f"catalogue of {len(embeddings)} rows: too small for a drift reference (mrl drift will need --reference)")
        drift.reference_path(cfg, collection).parent.mkdir(parents=True, exist_ok=True)  # a stage output under DVC
        return None
    prefixes = list(cfg.drift.prefixes) or sorted({funnel.d0, *funnel.rerank_dims})
    meta = {"collection": collection, "model_name": cfg.registry.model_name, "model_version": champion.version,
            "model_uri": champion.model_uri}
    ref = drift.build_reference(embeddings, labels, [str(c) for c in classes], prefixes, cfg.drift, meta, log)
    path = drift.save_reference(ref, drift.reference_path(cfg, collection))
    mlflow_client(tracking_uri).log_artifact(champion.run_id, str(path), "drift")
    return path

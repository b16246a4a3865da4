"""Retiering: re-choose the funnel of the served collection on the queries it really gets, and rebuild the collection
from its own stored rows (no model runs, nothing is embedded again) as a new versioned collection
`<alias>_v<model version>_t<n>`, verified through the serving backend, then swapped in behind the alias.

Promotion chooses the funnel once, on held-out catalogue items. The service's query log (`mrl serve`, files
`queries-*.npy`) holds the full-dim embeddings of the external queries it answered: those are the queries the funnel
has to reach the target recall on. With fewer logged queries than a minimum, held-out rows of the collection stand in
(taken out of what is searched, so that no query finds itself), as at promotion.

The candidates and the rule are promotion's (`mrl.retrieval.choose`, quantized shortlists only where the memory
backend serves); the served funnel is measured beside them on the same queries, and wins if it is still the fastest
that reaches the target (then nothing is rebuilt). The new collection records the same lineage (model name and
version, data sha256) and the collection it replaced (for `mrl index rollback`); how it was retiered is its
`mrl.retier` property. The promotion lock is held from reading the alias to swapping it; any failure before the swap
drops the partial collection and its drift reference, and leaves the alias, the old collection and the registry as
they were."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mrl import drift
from mrl.config import Config
from mrl.errors import MRLError
from mrl.progress import progress
from mrl.promote import verify_collection
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.backends import resolve_backend
from mrl.retrieval.choose import FunnelCost, candidate_funnels, choose_funnel, measure_funnels
from mrl.retrieval.funnel import exact_search
from mrl.retrieval.lifecycle import drop_old_collections
from mrl.retrieval.memory_index import read_stored
from mrl.retrieval.snapshot import remove_snapshot, snapshot_root
from mrl.tracking import client as mlflow_client

DEFAULT_QUERY_LOG = Path("artifacts/query_log")  # where `mrl serve --query-log-dir` writes by default
MIN_LOG_QUERIES = 100  # fewer logged queries than this: held-out rows of the collection are the queries
RETIER_PROPERTY = "mrl.retier"  # collection property: how the collection was retiered (JSON)
CORE_FIELDS = ("id", "label", "short", "full")  # every collection's; other scalar fields are copied as they are


@dataclass
class StoredRows:
    """A collection's rows as Milvus stores them: what a rebuild needs to serve the same."""

    ids: list[str]
    labels: list[str]
    full: np.ndarray  # (rows, full dim) float32
    extra: dict[str, list]  # field -> values aligned with ids (thumbnails, document texts, ...)
    extra_kinds: dict[str, str]  # field -> "varchar" | "text" | "float", as `mi.create_collection` takes them


@dataclass
class LiveQueries:
    vectors: np.ndarray  # (queries, full dim)
    own_ids: list[str]  # a held-out row's own id (dropped from its hits); "" for a logged query
    searched: np.ndarray  # rows of the collection the funnel is chosen over (held-out rows taken out)
    source: str  # "query_log" | "held_out"
    description: str  # for the output: which queries, how many, from where


@dataclass
class RetierResult:
    collection: str  # the collection the alias serves now (the previous one if nothing was rebuilt)
    previous: str | None  # what it replaced (None: not swapped)
    rows: int
    queries: LiveQueries
    served: FunnelCost  # the funnel served before, measured on the queries
    chosen: FunnelCost
    swapped: bool
    verify_recall: float | None = None
    verify_n: int = 0  # queries verified through the serving backend
    dropped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # read, choose, build, drift, verify, total

    def to_dict(self) -> dict:
        """The retier record (`mrl index retier --out`): promotion's record, plus the served funnel, the queries
        and the time of each step."""
        return {"collection": self.collection, "previous": self.previous, "rows": self.rows,
                "funnel": self.chosen.row(), "verify_recall": self.verify_recall, "verify_queries": self.verify_n,
                "dropped": self.dropped,
                "swapped": self.swapped, "served_funnel": self.served.row(),
                "queries": {"source": self.queries.source, "count": len(self.queries.vectors),
                            "description": self.queries.description},
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}

    def summary(self, alias: str, k: int) -> list[str]:
        """What `mrl index retier` prints: both funnels on the live queries, where the alias points, the time."""
        lines = [f"{'':8}{'funnel':<30}{f'recall@{k}':>10}{'p50 ms':>9}"]
        for label, c in (("served", self.served), ("chosen", self.chosen)):
            lines.append(f"{label:<8}{c.funnel.name():<30}{c.recall:>10.4f}{c.latency_ms or float('nan'):>9.3f}")
        if self.swapped:
            lines.append(f"alias {alias}: {self.previous} -> {self.collection} ({self.rows:,} rows, verified recall@{k} "
                         f"{self.verify_recall:.4f} on {self.verify_n:,} queries); "
                         f"`mrl index rollback` goes back to {self.previous}")
        else:
            lines.append(f"the served funnel is still the fastest reaching the target: alias {alias} stays on "
                         f"{self.collection}, nothing rebuilt")
        if self.dropped:
            lines.append(f"dropped old collections: {', '.join(self.dropped)}")
        steps = ", ".join(f"{step} {s:.1f} s" for step, s in self.seconds.items() if step != "total")
        lines.append(f"retier took {self.seconds.get('total', 0):.1f} s ({steps})")
        return lines


def read_query_log(directory: Path | None, full_dim: int, limit: int) -> tuple[np.ndarray, str]:
    """The newest `limit` rows of the service's query log (files `queries-*.npy`, named by time) and where they came
    from. Every file is checked: unreadable, not 2-D, another dim or non-finite values are a one-line MRLError naming
    the file. `directory` None: the service's default, which may not exist yet (no rows)."""
    path = directory or DEFAULT_QUERY_LOG
    if not path.is_dir():
        if directory is not None:
            raise MRLError(f"{path}: query log directory not found")
        return np.empty((0, full_dim), np.float32), f"no query log at {path}"
    arrays, written = [], []
    for file in sorted(path.glob("queries-*.npy")):
        try:
            x = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise MRLError(f"{file}: not a readable .npy array ({type(e).__name__}: {str(e)[:120]})") from None
        if x.ndim != 2 or x.shape[1] != full_dim or not np.issubdtype(x.dtype, np.number):
            raise MRLError(f"{file}: expected query embeddings of shape (rows, {full_dim}) (the served collection's "
                           f"full dim), got {x.shape} {x.dtype}")
        if not np.isfinite(x).all():
            raise MRLError(f"{file}: holds NaN or infinite values")
        arrays.append(x.astype(np.float32))
        written += [file_time(file)] * len(x)
    logged = np.concatenate(arrays) if arrays else np.empty((0, full_dim), np.float32)
    # The log does not say which model embedded a query: the span shows whether it predates the served model.
    span = [t for t in written[-limit:] if t is not None]
    when = f", written {_utc(min(span))} to {_utc(max(span))}" if span else ""
    return logged[-limit:], f"the {min(limit, len(logged)):,} newest of {len(logged):,} logged queries ({path}{when})"


def file_time(file: Path) -> float | None:
    """When the service wrote a query-log file (Unix seconds, from its name queries-<ns>.npy); None if not named so."""
    stamp = file.stem.removeprefix("queries-")
    return int(stamp) / 1e9 if stamp.isdigit() else None


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def field_kinds(client, name: str) -> dict[str, str]:
    """The collection's scalar fields beyond id and label, as `mi.create_collection` declares them."""
    # pymilvus reads and checks $MILVUS_URI at import (see mi.connect): imported only where used
    from pymilvus import DataType

    kinds = {}
    for f in client.describe_collection(name)["fields"]:
        if f["name"] in CORE_FIELDS:
            continue
        if f["type"] == DataType.DOUBLE:
            kinds[f["name"]] = "float"
        elif f["type"] == DataType.VARCHAR:
            kinds[f["name"]] = "text" if f["params"].get("max_length", 0) > 1024 else "varchar"
        else:
            raise MRLError(f"Milvus collection {name}: field {f['name']} of type {f['type']!r} is not one mrl writes")
    return kinds


def read_rows(client, name: str, batch: int = 16_000) -> StoredRows:
    """Every row's id, label, full embedding and extra fields, with progress."""
    client.load_collection(name)  # a no-op when loaded; Milvus Lite reopens a collection released
    kinds = field_kinds(client, name)
    ids, labels, full, extra = read_stored(client, name, batch, tuple(kinds))
    return StoredRows(ids, labels, full, extra, kinds)


def pick_queries(rows: StoredRows, logged: np.ndarray, described: str, cfg: Config, min_queries: int) -> LiveQueries:
    """The logged queries when there are at least `min_queries`, else up to retrieval.max_queries held-out rows (at
    most a fifth of the collection), taken out of what is searched. Either way at most retrieval.choose_sample rows
    are searched."""
    rc, n = cfg.retrieval, len(rows.ids)
    rng = np.random.default_rng(0)
    if len(logged) >= min_queries:
        queries = LiveQueries(logged, [""] * len(logged), np.arange(n), "query_log", described)
    else:
        held = np.sort(rng.choice(n, max(1, min(rc.max_queries, n // 5)), replace=False))
        why = described + (f": fewer than --min-queries {min_queries}" if len(logged) else "")
        queries = LiveQueries(rows.full[held], [rows.ids[i] for i in held], np.setdiff1d(np.arange(n), held),
                              "held_out", f"{len(held):,} held-out rows of the collection ({why})")
    if len(queries.searched) > rc.choose_sample:
        queries.searched = np.sort(rng.choice(queries.searched, rc.choose_sample, replace=False))
    return queries


def choose_on(cfg: Config, backend: str, info: mi.CollectionInfo, rows: StoredRows, queries: LiveQueries,
              log: Callable[[str], None]) -> tuple[FunnelCost, FunnelCost]:
    """(the served funnel's cost, the chosen funnel's) on the live queries: promotion's candidates plus the served
    funnel, promotion's rule (the fastest that reaches retrieval.target_recall)."""
    rc = cfg.retrieval
    candidates = candidate_funnels(rc, info.nesting_dims, None if backend == "memory" else ["float32"])
    if info.funnel not in candidates and (backend == "memory" or info.funnel.quant == "float32"):
        candidates.append(info.funnel)
    searched = rows.full[queries.searched]
    log(f"choosing the funnel for the {backend} backend ({rc.index_type}) among {len(candidates)} candidates on "
        f"{len(queries.vectors):,} queries over {len(searched):,} of {len(rows.ids):,} rows")
    bar = progress(None, "measuring funnels", "funnel", total=len(candidates))
    costs = measure_funnels(searched, queries.vectors, candidates, rc, progress=bar.update)
    bar.close()
    chosen = choose_funnel(costs, rc.target_recall)
    served = next((c for c in costs if c.funnel == info.funnel and c.latency_ms is not None), None)
    if served is None:  # below the target, or a larger k0 of a kind that reached it: timed here, on its own
        untargeted = rc.model_copy(update={"target_recall": 0.0})  # measure_funnels times what reaches the target
        served = measure_funnels(searched, queries.vectors, [info.funnel], untargeted)[0]
    return served, chosen


def next_retier_name(client, alias: str, info: mi.CollectionInfo) -> str:
    """<alias>_v<N>_t<n>: n one above any collection of model version N (a retier never reuses a name, so a
    collection the alias left, or a rollback went back from, is never rebuilt under a replica still serving it)."""
    if not info.model_version.isdigit():
        raise MRLError(f"Milvus collection {info.name}: model version {info.model_version!r} is not a number")
    version = int(info.model_version)
    taken = [key[1] for name in mi.versioned_collections(client, alias) if (key := mi.version_key(alias, name))
             and key[0] == version]
    return f"{alias}_v{version}_t{max(taken, default=0) + 1}"


def build(client, cfg: Config, info: mi.CollectionInfo, name: str, rows: StoredRows, chosen: FunnelCost,
          record: dict) -> None:
    """The new collection from the stored rows, under the chosen funnel, with the same lineage and extra fields."""
    rc = cfg.retrieval
    new = replace(info, name=name, funnel=chosen.funnel, k=rc.k, previous=info.name)  # lineage as it was
    mi.create_collection(client, new, rows.full.shape[1], rc.index_type, rc.hnsw_m, rc.hnsw_ef_construction,
                         rows.extra_kinds or None)
    client.alter_collection_properties(name, properties={RETIER_PROPERTY: json.dumps(record)})
    bar = progress(None, f"inserting into {name}", "row", total=len(rows.ids))
    try:
        mi.insert_rows(client, name, np.asarray(rows.ids, dtype=object), rows.labels, rows.full, chosen.funnel.d0,
                       rc.insert_batch, bar.update, rows.extra or None)
    finally:
        bar.close()


def carry_drift_reference(cfg: Config, info: mi.CollectionInfo, name: str, tracking_uri: str | None,
                          log: Callable[[str], None]) -> Path | None:
    """The served collection's drift reference, saved under the new name (its rows are the same catalogue) and logged
    to the model version's MLflow run, where checks on other machines fetch it. Where the local file is missing it is
    fetched from that run; where there is none (a catalogue too small for one), none is carried over. MLflow being
    unreachable costs the MLflow copy, not the retier."""
    source, run_id, why = drift.reference_path(cfg, info.name), None, ""
    try:
        registry = mlflow_client(tracking_uri)
        run_id = registry.get_model_version(info.model_name, info.model_version).run_id
    except Exception as e:  # MlflowException (no such model version), MRLError (server down), OSError
        why = f"model {info.model_name} v{info.model_version} not found in MLflow ({type(e).__name__})"
    with tempfile.TemporaryDirectory() as tmp:
        if not source.exists() and run_id is not None:
            try:
                source = Path(registry.download_artifacts(run_id, f"drift/{source.name}", tmp))
            except Exception as e:  # MlflowException or OSError, depending on the artifact store
                why = f"none in MLflow run {run_id} ({type(e).__name__})"
        if not source.exists():
            log(f"no drift reference of {info.name} to carry over ({why or 'none here'}); mrl drift will need "
                "--reference")
            return None
        ref = drift.load_reference(source)
        ref.meta.update(collection=name, retiered_from=info.name)
        path = drift.save_reference(ref, drift.reference_path(cfg, name))
    try:
        if run_id is None:
            raise MRLError(why)
        mlflow_client(tracking_uri).log_artifact(run_id, str(path), "drift")
    except Exception as e:  # as above: the local copy serves checks on this machine
        log(f"drift reference {path} not logged to MLflow ({e if isinstance(e, MRLError) else type(e).__name__})")
    return path


def verify(client, cfg: Config, backend: str, name: str, rows: StoredRows, queries: LiveQueries,
           log: Callable[[str], None], snapshots: Path | None = None) -> float:
    """Promotion's check (`verify_collection`): the row count, then recall@k of the first retrieval.verify_queries
    queries through the serving backend against exact full-dim search over every row (a held-out row's own id
    dropped)."""
    rc = cfg.retrieval
    vectors, own = queries.vectors[: rc.verify_queries], queries.own_ids[: rc.verify_queries]
    top = exact_search(rows.full, vectors, min(rc.k + 1, len(rows.ids))).indices
    truth = [[rows.ids[i] for i in row if rows.ids[i] != mine][: rc.k] for row, mine in zip(top, own)]
    return verify_collection(client, name, len(rows.ids), rc, backend, own, vectors, truth, log, snapshots)


def abandon_retier(cfg: Config, client, alias: str, name: str, snapshots: Path | None = None) -> None:
    """Drop what a failed retier built and release its lock; the alias never pointed at it."""
    if mi.alias_target(client, alias) != name:
        if name in client.list_collections():
            client.drop_collection(name)
        drift.reference_path(cfg, name).unlink(missing_ok=True)
        remove_snapshot(snapshots, name)
    mi.release_promotion_lock(client, alias, name)


def retier_index(cfg: Config, milvus_uri: str | None = None, tracking_uri: str | None = None,
                 queries_dir: Path | None = None, min_queries: int = MIN_LOG_QUERIES,
                 log: Callable[[str], None] = print) -> RetierResult:
    """Re-choose the served collection's funnel on its live queries and, when another funnel wins, rebuild the
    collection from its stored rows under it, verify it and swap the alias (see the module's docstring)."""
    rc, alias, started = cfg.retrieval, cfg.retrieval.collection_prefix, time.perf_counter()
    client = mi.connect(milvus_uri)
    current = mi.alias_target(client, alias)
    if current is None:
        raise MRLError(f"Milvus alias {alias} does not exist at {mi.resolve_milvus_uri(milvus_uri)}; run "
                       "`mrl index promote` first")
    info = mi.CollectionInfo.read(client, current)
    logged, described = read_query_log(queries_dir, info.nesting_dims[-1], rc.max_queries)  # before anything moves
    name = next_retier_name(client, alias, info)
    mi.acquire_promotion_lock(client, alias, name, log)  # held until the alias swap, or released by abandon_retier
    try:
        if (now := mi.alias_target(client, alias)) != current:  # moved between the read and the lock
            raise MRLError(f"Milvus alias {alias} moved from {current} to {now} just now; run the retier again")
        result = _retier_locked(cfg, client, milvus_uri, tracking_uri, info, name, logged, described, min_queries, log)
        if result.swapped:
            mi.swap_alias(client, alias, name, expected=current)
        mi.release_promotion_lock(client, alias, name)
    except BaseException:
        abandon_retier(cfg, client, alias, name, snapshot_root(rc.snapshot_dir, milvus_uri))
        raise
    if result.swapped:
        result.dropped = drop_old_collections(client, alias, rc.keep_last, rc.drop_grace_s, log,
                                              snapshot_root(rc.snapshot_dir, milvus_uri))
        for old in result.dropped:
            drift.reference_path(cfg, old).unlink(missing_ok=True)
    result.seconds["total"] = time.perf_counter() - started
    return result


def _retier_locked(cfg: Config, client, milvus_uri: str | None, tracking_uri: str | None, info: mi.CollectionInfo,
                   name: str, logged: np.ndarray, described: str, min_queries: int,
                   log: Callable[[str], None]) -> RetierResult:
    """Read, choose, and (if another funnel wins) build, carry the drift reference over and verify; not the swap."""
    seconds, step = {}, time.perf_counter()
    rows = read_rows(client, info.name)
    seconds["read"], step = time.perf_counter() - step, time.perf_counter()
    queries = pick_queries(rows, logged, described, cfg, min_queries)
    log(f"queries: {queries.description}")
    backend = resolve_backend(cfg.retrieval.serve_backend, milvus_uri, client)
    served, chosen = choose_on(cfg, backend, info, rows, queries, log)
    seconds["choose"], step = time.perf_counter() - step, time.perf_counter()
    if chosen.funnel == info.funnel:
        return RetierResult(info.name, None, len(rows.ids), queries, served, chosen, False, seconds=seconds)
    record = {"from": info.name, "queries": queries.source, "query_count": len(queries.vectors),
              "description": queries.description, "served_funnel": served.row(), "chosen_funnel": chosen.row(),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log(f"building {name} under {chosen.funnel.name()} from the {len(rows.ids):,} stored rows (no model runs)")
    build(client, cfg, info, name, rows, chosen, record)
    seconds["build"], step = time.perf_counter() - step, time.perf_counter()
    if (path := carry_drift_reference(cfg, info, name, tracking_uri, log)) is not None:
        log(f"drift reference {path}, carried over from {info.name}")
    seconds["drift"], step = time.perf_counter() - step, time.perf_counter()
    recall = verify(client, cfg, backend, name, rows, queries, log, snapshot_root(cfg.retrieval.snapshot_dir, milvus_uri))
    seconds["verify"] = time.perf_counter() - step
    return RetierResult(name, info.name, len(rows.ids), queries, served, chosen, True, recall,
                        min(len(queries.vectors), cfg.retrieval.verify_queries), seconds=seconds)

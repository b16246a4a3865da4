"""The Milvus side of funnel search: versioned collections behind one alias, promoted atomically.

A collection `<prefix>_v<model version>` holds, per item: id, label, the normalized d0-dim prefix `short` (ANN
index, inner product = cosine) and the full embedding `full` (for re-ranking). Its `mrl.info` property is a JSON
record of what the service needs (funnel, model version, nesting dims) and which collection it replaced. The
alias `<prefix>` is the only thing that moves, with one `alter_alias` call after verification.

`full` is a second FLOAT_VECTOR field where the engine allows several vector fields per collection (Milvus Lite,
Milvus >= 2.4), and an ARRAY of FLOAT on Milvus 2.3, which allows one. Either way a search returns it as an output
field, so a funnel search is one round trip; the schema tells which layout a collection has (`full_layout_of`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.errors import MRLError
from mrl.retrieval.funnel import Funnel, SearchResult, normalized_prefix, rerank

DEFAULT_MILVUS_URI = "milvus.db"  # Milvus Lite data file in the project directory
INFO_PROPERTY = "mrl.info"  # collection property holding CollectionInfo as JSON
MIN_SERVER_VERSION = (2, 3)  # ARRAY fields: where `full` goes on a server with one vector field per collection
MULTI_VECTOR_VERSION = (2, 4)  # several vector fields per collection: `full` is a FLOAT_VECTOR
ARRAY_MAX_CAPACITY = 4096  # Milvus's limit on an ARRAY field's length, so on the full dim on Milvus 2.3


def resolve_milvus_uri(explicit: str | None = None) -> str:
    """explicit (a server URL or a Milvus Lite file) > $MILVUS_URI (a server URL: pymilvus itself requires
    that) > ./milvus.db (Milvus Lite, one process at a time)."""
    uri = explicit or os.environ.get("MILVUS_URI") or DEFAULT_MILVUS_URI
    return uri if "://" in uri else str(Path(uri).resolve())


def connect(uri: str | None = None, lock_wait_s: float = 300.0):
    """A MilvusClient. A Milvus Lite file is opened by one process at a time: while another holds it (parallel
    pipeline steps on kfp.local), wait up to lock_wait_s for it."""
    # Milvus Lite's in-process gRPC server logs a traceback for RPCs it does not implement (and that the
    # client handles), and pymilvus logs each failed RPC before raising it: keep both out of users' logs.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    # Milvus Lite logs each embedded server's start and stop at INFO, the stop from an atexit hook: after pytest (or
    # any host) has closed its streams, that line turns into a "Logging error" traceback.
    logging.getLogger("milvus_lite").setLevel(logging.WARNING)
    uri = resolve_milvus_uri(uri)
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            from pymilvus import MilvusClient  # reads and checks $MILVUS_URI at import: must be a server URL

            client = MilvusClient(uri)
            logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its first import set it back to WARNING
            break
        except Exception as e:  # pymilvus raises MilvusException, ConnectionConfigException, RuntimeError, ...
            locked = "://" not in uri and Path(uri).exists() and time.monotonic() < deadline and _lite_locked(uri)
            if not locked:
                raise MRLError(f"Milvus at {uri}: cannot connect "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
            time.sleep(1.0)
    try:
        version = server_version(client.get_server_version())
    except Exception as e:  # MilvusException: the server went away, or does not answer this RPC
        client.close()
        raise MRLError(f"Milvus at {uri}: cannot read the server version ({type(e).__name__})") from None
    if version is not None and version < MIN_SERVER_VERSION:  # here, not halfway through a promotion
        client.close()
        raise MRLError(f"Milvus at {uri}: server v{version[0]}.{version[1]} is too old; mrl needs Milvus >= "
                       f"{'.'.join(map(str, MIN_SERVER_VERSION))}")
    return client


def server_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Milvus server from `get_server_version()` ("v2.3.5-lite" -> (2, 3)); None for Milvus
    Lite ("milvus_lite-3.2.2", versioned on its own: it has every feature used here) or an unknown format."""
    if version.startswith("milvus_lite"):
        return None
    m = re.search(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def full_layout(client, full_dim: int) -> str:
    """How a new collection on this engine stores the full embedding: "vector" (Milvus Lite, Milvus >= 2.4, or an
    unrecognized version: assumed current) or "array" (Milvus 2.3: one vector field per collection)."""
    version = client.get_server_version()
    parsed = server_version(version)
    if parsed is None or parsed >= MULTI_VECTOR_VERSION:
        return "vector"
    if full_dim > ARRAY_MAX_CAPACITY:
        raise MRLError(f"Milvus server {version}: a {full_dim}-dim full embedding needs Milvus >= "
                       f"{'.'.join(map(str, MULTI_VECTOR_VERSION))} (2.3 holds it in an ARRAY field of at most "
                       f"{ARRAY_MAX_CAPACITY} elements)")
    return "array"


def full_layout_of(client, name: str) -> str:
    """The layout of collection `name`'s `full` field, from its schema: "vector" (FLOAT_VECTOR, searchable) or
    "array" (ARRAY of FLOAT, returned by search and get only)."""
    # pymilvus reads and checks $MILVUS_URI at import (see connect): imported only where used
    from pymilvus import DataType

    fields = {f["name"]: f["type"] for f in client.describe_collection(name)["fields"]}
    return "array" if fields.get("full") == DataType.ARRAY else "vector"


def _lite_locked(path: str) -> bool:
    """Whether another process holds the Milvus Lite data directory's lock (what milvus_lite itself checks)."""
    lock = Path(path) / "LOCK"
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model_name: str
    model_version: str
    funnel: Funnel
    nesting_dims: list[int]
    k: int
    previous: str | None  # the collection this one replaced, for rollback
    data_sha256: str | None = None  # the catalogue file that was indexed (lineage; None: not recorded)
    video_root: str | None = None  # video collections: the ingested folder the video ids are relative to (GET /videos)
    adapts: str | None = None  # "vectors": built by an adapter of the user's vectors (`mrl adapt`): queries go through it

    def describe(self) -> str:
        return json.dumps({"model_name": self.model_name, "model_version": self.model_version,
                           "funnel": self.funnel.to_dict(), "nesting_dims": self.nesting_dims, "k": self.k,
                           "previous": self.previous, "data_sha256": self.data_sha256}
                          | ({"video_root": self.video_root} if self.video_root else {})
                          | ({"adapts": self.adapts} if self.adapts else {}))

    @classmethod
    def read(cls, client, name: str) -> CollectionInfo:
        d = json.loads(client.describe_collection(name).get("properties", {}).get(INFO_PROPERTY) or "{}")
        if "funnel" not in d:
            raise MRLError(f"Milvus collection {name}: not created by `mrl index promote` (no {INFO_PROPERTY} property)")
        return cls(name, d["model_name"], str(d["model_version"]), Funnel.from_dict(d["funnel"]),
                   list(d["nesting_dims"]), int(d["k"]), d.get("previous"), d.get("data_sha256"), d.get("video_root"),
                   d.get("adapts"))


def alias_target(client, alias: str) -> str | None:
    """The collection `alias` points at, or None if the alias does not exist."""
    if alias not in client.list_aliases().get("aliases", []):
        return None
    return client.describe_alias(alias)["collection_name"]


LOCK_PROPERTY = "mrl.promotion_lock"  # property of the lock collection: who holds it, since when
LOCK_STALE_S = 6 * 3600  # a lock this old is abandoned (a promotion of the demo takes minutes, of 1M rows < 1 h)


def lock_collection(alias: str) -> str:
    return f"{alias}_promotion_lock"


def lock_holder(client, alias: str) -> dict | None:
    """{"owner", "token", "since", "host", "pid"} of the promotion holding `alias`'s lock, or None."""
    name = lock_collection(alias)
    if not client.has_collection(name):
        return None
    return json.loads(client.describe_collection(name).get("properties", {}).get(LOCK_PROPERTY) or "{}") or {
        "owner": "unknown", "since": 0}


def acquire_promotion_lock(client, alias: str, owner: str, log=None) -> None:
    """Hold `alias`'s promotion lock: a marker collection, because a promotion's steps may run in different
    processes or pods (KFP), which share only Milvus. Creating a collection that exists fails, and the holder's
    random token is read back, so of two promotions starting together exactly one goes on. A lock older than
    LOCK_STALE_S is taken over (its promotion died without cleaning up); a younger one is a clear error."""
    held = lock_holder(client, alias)
    name = lock_collection(alias)
    if held is not None:
        age = time.time() - float(held.get("since", 0))
        if age < LOCK_STALE_S:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held.get("since", 0))))
            raise MRLError(f"Milvus alias {alias}: another promotion ({held.get('owner')} on {held.get('host', '?')}) "
                           f"holds the promotion lock since {since}; wait for it, or if it died, release the lock with "
                           f"`mrl index unlock` (it is taken over by itself after {LOCK_STALE_S // 3600} h)")
        client.drop_collection(name)
        if log:
            log(f"took over the promotion lock of {held.get('owner')}, abandoned {age / 3600:.1f} h ago")
    token = uuid.uuid4().hex
    record = {"owner": owner, "token": token, "since": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    # pymilvus reads and checks $MILVUS_URI at import (see connect): imported only where used
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field; the lock holds no rows
    try:
        client.create_collection(name, schema=schema, properties={LOCK_PROPERTY: json.dumps(record)})
    except Exception:  # pymilvus raises MilvusException: the collection appeared since we looked
        pass
    if (lock_holder(client, alias) or {}).get("token") != token:
        raise MRLError(f"Milvus alias {alias}: another promotion took the promotion lock just now; try again later")


def release_promotion_lock(client, alias: str, owner: str) -> None:
    """Release the lock if `owner` holds it (a failed promotion may never have taken it)."""
    held = lock_holder(client, alias)
    if held is not None and held.get("owner") == owner:
        client.drop_collection(lock_collection(alias))


def swap_alias(client, alias: str, collection: str, expected: str | None) -> None:
    """Point `alias` at `collection`, if it still points where this promotion found it (`expected`; None: no alias).
    Milvus has no compare-and-swap: the promotion lock keeps other promotions out, and this re-check catches
    anything else that moved the alias meanwhile (a rollback, a promotion that ignored the lock)."""
    current = alias_target(client, alias)
    if current != expected:
        raise MRLError(f"Milvus alias {alias} now points at {current}, not {expected} as when this promotion started; "
                       f"refusing to overwrite it with {collection}")
    (client.alter_alias if expected is not None else client.create_alias)(collection_name=collection, alias=alias)
    if expected is not None:
        mark_replaced(client, expected)


REPLACED_PROPERTY = "mrl.replaced_at"  # when the alias left this collection (Unix time): the drop grace period


def mark_replaced(client, name: str) -> None:
    """Record when the alias left `name`: replicas still serving it (they follow the alias every reload interval)
    keep it for retrieval.drop_grace_s before any promotion may drop it."""
    client.alter_collection_properties(name, properties={REPLACED_PROPERTY: str(time.time())})


def replaced_at(client, name: str) -> float | None:
    value = client.describe_collection(name).get("properties", {}).get(REPLACED_PROPERTY)
    return float(value) if value else None


def row_count(client, name: str) -> int:
    """Rows in the collection, counted with Strong consistency. A Milvus server answers the default (Bounded) reads
    from its last consumed state, which right after an insert misses the last batches (measured on 2.3: 18,000 of
    20,000 rows); a Strong read waits for every earlier write, so the searches that follow see them too."""
    return int(client.query(name, filter="", output_fields=["count(*)"],
                            consistency_level="Strong")[0]["count(*)"])


def version_key(prefix: str, name: str) -> tuple[int, int] | None:
    """(model version N, retier n) of a versioned collection: <prefix>_v<N> (promoted: n = 0) or <prefix>_v<N>_t<n>
    (the n-th `mrl index retier` of version N's rows); None for any other name (<prefix>_v<N>_frames, the lock)."""
    m = re.fullmatch(rf"{re.escape(prefix)}_v(\d+)(?:_t(\d+))?", name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def versioned_collections(client, prefix: str) -> list[str]:
    """Collections named <prefix>_v<N> or <prefix>_v<N>_t<n>, oldest first: by (N, n)."""
    found = [(key, name) for name in client.list_collections() if (key := version_key(prefix, name)) is not None]
    return [name for _, name in sorted(found)]


def create_collection(client, info: CollectionInfo, full_dim: int, index_type: str, hnsw_m: int,
                      hnsw_ef_construction: int, extra_fields: dict[str, str] | None = None) -> None:
    """The empty collection, indexed and loaded, with `full` in the layout this engine allows (see `full_layout`).
    `extra_fields`: more scalar fields, name -> "varchar" | "text" (up to 64 KB) | "float" (video segments')."""
    # pymilvus reads and checks $MILVUS_URI at import (see connect): imported only where used
    from pymilvus import DataType, MilvusClient

    layout = full_layout(client, full_dim)  # first: an unsupported server fails before anything is created
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=256)
    schema.add_field("label", DataType.VARCHAR, max_length=256)
    for name, kind in (extra_fields or {}).items():
        if kind == "float":
            schema.add_field(name, DataType.DOUBLE)
        else:
            schema.add_field(name, DataType.VARCHAR, max_length=65_535 if kind == "text" else 1024)
    schema.add_field("short", DataType.FLOAT_VECTOR, dim=info.funnel.d0)
    if layout == "vector":
        schema.add_field("full", DataType.FLOAT_VECTOR, dim=full_dim)
    else:
        schema.add_field("full", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=full_dim)
    index = client.prepare_index_params()
    params = {"M": hnsw_m, "efConstruction": hnsw_ef_construction} if index_type == "HNSW" else {}
    index.add_index("short", index_type=index_type, metric_type="IP", params=params)
    if layout == "vector":  # every vector field needs an index before the collection loads; COSINE: full embeddings
        index.add_index("full", index_type="FLAT", metric_type="COSINE")  # need not be unit length (mrl.retrieval.exact)
    client.create_collection(info.name, schema=schema, index_params=index, properties={INFO_PROPERTY: info.describe()})


def insert_rows(client, name: str, ids: np.ndarray, labels: list[str], embeddings: np.ndarray, d0: int,
                batch: int, progress=None, extra: dict[str, list] | None = None) -> int:
    """Insert in large batches; rows carry numpy arrays (measured faster here than list-valued rows). `extra`:
    values of the collection's extra fields, one list per field, aligned with `ids`."""
    short = normalized_prefix(embeddings, d0)
    extra = extra or {}
    inserted = 0
    for start in range(0, len(ids), batch):
        end = min(start + batch, len(ids))
        client.insert(name, [{"id": str(ids[i]), "label": labels[i], "short": short[i], "full": embeddings[i]}
                             | {field: values[i] for field, values in extra.items()} for i in range(start, end)])
        inserted = end
        if progress:
            progress(end - start)
    return inserted


class MilvusFunnelIndex:
    """Funnel search against a collection (usually through the alias): ANN shortlist on the d0 field in
    Milvus, then re-rank the candidates' full embeddings in process."""

    def __init__(self, client, name: str, hnsw_ef: int = 0):
        self.client, self.name = client, name
        self.info = CollectionInfo.read(client, name)
        client.load_collection(name)  # a no-op when loaded; needed after a restart
        self.hnsw_ef = hnsw_ef

    def search(self, queries: np.ndarray, k: int | None = None) -> tuple[list[list[dict]], dict[str, float]]:
        """Per query: [{"id", "score", "label"}], best first; and per-stage timings in ms (summed).
        The same interface as the in-memory reference, `mrl.retrieval.ReferenceFunnelIndex`.

        One Milvus round trip for the whole batch: the shortlist search also returns each candidate's label and,
        when the funnel re-ranks, its full embedding (`shortlist_d<d0>` times the call and decoding its rows)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = k or self.info.k
        stages = self.info.funnel.stages(k)
        d0, k0 = stages[0]
        timings = {}
        start = time.perf_counter()
        ef = self.hnsw_ef or max(2 * k0, 64)
        reranks = len(stages) > 1
        hits = self.client.search(self.name, data=list(normalized_prefix(queries, d0)), anns_field="short", limit=k0,
                                  output_fields=["label", "full"] if reranks else ["label"],
                                  search_params={"metric_type": "IP", "params": {"ef": ef}})
        shortlists = [([h["id"] for h in row], [h["entity"]["label"] for h in row],
                       np.array([h["distance"] for h in row], dtype=np.float32),
                       np.asarray([h["entity"]["full"] for h in row], dtype=np.float32) if reranks else None)
                      for row in hits]
        timings[f"shortlist_d{d0}"] = 1000 * (time.perf_counter() - start)
        results = []
        for q, (ids, labels, scores, full) in zip(queries, shortlists):
            order = np.arange(len(ids))
            if full is not None and len(ids):
                candidates = order[None, :]
                for dim, keep in stages[1:]:
                    start = time.perf_counter()
                    candidates, score_rows = rerank(q[None, :], normalized_prefix(full, dim), candidates, keep)
                    timings[f"rerank_d{dim}"] = timings.get(f"rerank_d{dim}", 0.0) + 1000 * (time.perf_counter() - start)
                order, scores = candidates[0], score_rows[0]
            results.append([{"id": ids[j], "score": float(s), "label": labels[j]} for j, s in zip(order[:k], scores[:k])])
        return results, timings

    def sample_id(self) -> str:
        """Some indexed item's id (for an example search)."""
        return self.client.query(self.name, filter="", output_fields=["id"], limit=1)[0]["id"]

    def vector_of(self, item_id: str) -> np.ndarray:
        """The stored full embedding of an item; MRLError if the id is unknown."""
        rows = self.client.get(self.name, ids=[item_id], output_fields=["full"])
        if not rows:
            raise MRLError(f"unknown item id {item_id!r} in {self.name}")
        return np.asarray(rows[0]["full"], dtype=np.float32)

    def search_result(self, queries: np.ndarray, id_to_row: dict[str, int], k: int | None = None) -> SearchResult:
        """The same search as row indices, for measuring recall against in-memory exact search."""
        hits, timings = self.search(queries, k)
        indices = np.array([[id_to_row[h["id"]] for h in row] for row in hits])
        scores = np.array([[h["score"] for h in row] for row in hits])
        return SearchResult(indices, scores, timings)

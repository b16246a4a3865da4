"""Which backend serves the funnel, and opening it over the collection behind the serving alias.

- memory: the collection is read from Milvus at load and searched in process (FAISS shortlist, in-memory
  re-rank): `MemoryFunnelIndex`. What `auto` picks for Milvus Lite, whose per-call cost grows with the
  collection (tens of ms per call at 60k rows).
- milvus: one Milvus round trip per query batch returns the shortlist and what the re-rank needs:
  `MilvusFunnelIndex`. What `auto` picks for a server URL (a Milvus server or cluster), where Milvus's own
  index is fast and the catalogue may not fit one process's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mrl.errors import MRLError
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.memory_index import MemoryFunnelIndex
from mrl.retrieval.snapshot import snapshot_root


def resolve_backend(setting: str, milvus_uri: str | None, client=None) -> str:
    """auto -> memory for Milvus Lite (a data file, or `milvus-lite server` behind a URL, told by `client`'s
    server version), milvus for a Milvus server or cluster."""
    if setting != "auto":
        return setting
    if "://" not in mi.resolve_milvus_uri(milvus_uri):
        return "memory"
    lite = client is not None and client.get_server_version().startswith("milvus_lite")
    return "memory" if lite else "milvus"


def open_index(client, name: str, cfg, backend: str, log: Callable[[str], None] | None = None,
               snapshots: Path | None = None):
    """A funnel index over collection `name` (cfg: RetrievalConfig; backend: memory | milvus). `snapshots`: the memory
    backend starts from the collection's snapshot there when it has a valid one (mrl.retrieval.snapshot)."""
    if backend == "memory":
        return MemoryFunnelIndex(client, name, cfg, log, snapshots)
    index = mi.MilvusFunnelIndex(client, name, cfg.hnsw_ef)
    if index.info.funnel.quant != "float32":
        raise MRLError(f"Milvus collection {name}: its funnel {index.info.funnel.name()} has a {index.info.funnel.quant} "
                       "shortlist, which only retrieval.serve_backend=memory serves (Milvus Lite stores float "
                       "vectors only); serve it with --set retrieval.serve_backend=memory")
    return index


def open_served_index(cfg, milvus_uri: str | None = None, client=None, log: Callable[[str], None] | None = None,
                      one_shot: bool = False):
    """The funnel index over the collection behind the serving alias, with the configured backend. `one_shot`
    (a single command-line search): `auto` asks Milvus directly where the funnel allows it, rather than reading
    the whole collection into memory for one query (~20 s at 70k rows on Milvus Lite)."""
    client = client or mi.connect(milvus_uri)
    name = mi.alias_target(client, cfg.collection_prefix)
    if name is None:
        raise MRLError(f"Milvus alias {cfg.collection_prefix} does not exist at {mi.resolve_milvus_uri(milvus_uri)}; "
                       "run `mrl index promote` first")
    backend = resolve_backend(cfg.serve_backend, milvus_uri, client)
    if one_shot and cfg.serve_backend == "auto" and mi.CollectionInfo.read(client, name).funnel.quant == "float32":
        backend = "milvus"
    return open_index(client, name, cfg, backend, log, snapshot_root(cfg.snapshot_dir, milvus_uri))

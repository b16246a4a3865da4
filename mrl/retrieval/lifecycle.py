"""The life of the collections behind a serving alias, after promotion: dropping old versions, rolling the alias
back, and releasing the lock of a promotion that died. (Promotion itself: mrl.promote and mrl.video.index.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mrl.config import Config
from mrl.errors import MRLError
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.memory_index import MemoryFunnelIndex
from mrl.retrieval.snapshot import remove_snapshot, snapshot_root


def drop_old_collections(client, alias: str, keep_last: int, grace_s: float = 0.0,
                         log: Callable[[str], None] | None = None, snapshots: Path | None = None) -> list[str]:
    """Keep the newest `keep_last` versioned collections, always the served one and its previous, and any the
    alias left less than `grace_s` ago (a replica may still serve it until its next alias check); a later
    promotion drops those. A dropped collection's snapshot under `snapshots` goes with it."""
    serving = mi.alias_target(client, alias)
    protected = {serving, mi.CollectionInfo.read(client, serving).previous} if serving else set()
    names = mi.versioned_collections(client, alias)
    dropped = []
    for name in names[: max(0, len(names) - keep_last)]:
        if name in protected:
            continue
        left = mi.replaced_at(client, name)
        if left is not None and time.time() - left < grace_s:
            if log:
                log(f"keeping {name}: the alias left it {time.time() - left:.0f} s ago, within retrieval.drop_grace_s "
                    f"{grace_s:.0f} s (replicas may still serve it); a later promotion drops it")
            continue
        client.drop_collection(name)
        remove_snapshot(snapshots, name)
        dropped.append(name)
    return dropped


def rollback_index(cfg: Config, milvus_uri: str | None = None, alias: str | None = None) -> tuple[str, str]:
    """Point the alias (default: retrieval.collection_prefix) back at the collection the current one replaced.
    Returns (from, to)."""
    client = mi.connect(milvus_uri)
    alias = alias or cfg.retrieval.collection_prefix
    current = mi.alias_target(client, alias)
    if current is None:
        raise MRLError(f"Milvus alias {alias} does not exist; nothing to roll back")
    held = mi.lock_holder(client, alias)
    if held is not None:  # its swap would fail on the moved alias after all its work; and this would be undone
        raise MRLError(f"Milvus alias {alias}: a promotion ({held.get('owner')}) is running; roll back after it ends")
    previous = mi.CollectionInfo.read(client, current).previous
    if not previous or previous not in client.list_collections():
        raise MRLError(f"Milvus alias {alias} -> {current}: no previous collection to roll back to")
    client.alter_alias(collection_name=previous, alias=alias)
    mi.mark_replaced(client, current)
    return current, previous


def unlock_alias(client, alias: str) -> dict:
    """Release the promotion lock of `alias` held by a promotion that died (a killed process or pod); returns what
    the lock recorded (owner, host, pid, since). MRLError if no lock is held."""
    held = mi.lock_holder(client, alias)
    if held is None:
        raise MRLError(f"Milvus alias {alias}: no promotion lock is held")
    client.drop_collection(mi.lock_collection(alias))
    return held


def snapshot_served(cfg: Config, milvus_uri: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Write the memory backend's snapshot of the collection behind the items alias (read from Milvus, as a replica
    without one would): for a collection promoted before snapshots existed, or whose snapshot was lost. Returns its
    folder."""
    rc = cfg.retrieval
    root = snapshot_root(rc.snapshot_dir, milvus_uri)
    if root is None:
        raise MRLError(f"{mi.resolve_milvus_uri(milvus_uri)} is a Milvus server: set retrieval.snapshot_dir to where "
                       "the snapshots should live (storage every replica mounts)")
    client = mi.connect(milvus_uri)
    try:
        name = mi.alias_target(client, rc.collection_prefix)
        if name is None:
            raise MRLError(f"Milvus alias {rc.collection_prefix} does not exist at {mi.resolve_milvus_uri(milvus_uri)}; "
                           "run `mrl index promote` first")
        index = MemoryFunnelIndex(client, name, rc, log)
        return index.write_snapshot(root)
    finally:
        client.close()

"""Snapshots of what the memory backend serves, so a replica starts in seconds instead of reading Milvus.

Reading a collection back from Milvus and building its shortlist index is most of a memory-backend start (70k rows
from Milvus Lite: ~21 s read + 3 s build; 1M rows: minutes). Promotion has both in hand when it verifies the new
collection, so it writes them once, beside the collection:

    <snapshot dir>/<collection>/
        manifest.json    collection, model version, funnel, rows, build settings, sha256 of every file below
        shortlist.faiss  the FAISS index over the d0 prefix (codes + HNSW graph)
        full.npy         the re-rank table (float16 by default), memory-mapped: replicas on one host share its pages
        ids.npy          item ids and labels, in row order
        labels.npy

A snapshot is used only when its manifest names the collection and model version being opened, with the same funnel
and index settings, the same row count as the collection, and every file's checksum matches. Anything else (none,
stale, corrupt, unreadable) is a warning and the index is read from Milvus as before: a snapshot can make a start
faster, never the answers different.

Where: `retrieval.snapshot_dir`, or by default beside a Milvus Lite data directory (`<dir>.snapshots/`). A Milvus
server has no local directory: set `retrieval.snapshot_dir` to storage every replica mounts (docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from mrl.retrieval import milvus_index as mi

MANIFEST = "manifest.json"
FORMAT = 1


def snapshot_root(snapshot_dir: str | None, milvus_uri: str | None) -> Path | None:
    """Where snapshots live: the configured directory, else beside a Milvus Lite data directory; None for a server
    without a configured directory."""
    if snapshot_dir:
        return Path(snapshot_dir)
    uri = mi.resolve_milvus_uri(milvus_uri)
    if "://" in uri:
        return None
    return Path(uri).with_name(Path(uri).name + ".snapshots")


def build_settings(cfg) -> dict:
    """The retrieval settings a snapshot's shortlist and re-rank table were made with (cfg: RetrievalConfig)."""
    return {"index_type": cfg.index_type, "hnsw_m": cfg.hnsw_m, "hnsw_ef_construction": cfg.hnsw_ef_construction,
            "rerank_dtype": cfg.rerank_dtype}


@dataclass
class Snapshot:
    ids: list[str]
    labels: list[str]
    full: np.ndarray  # memory-mapped, read-only
    index: object  # faiss.Index or faiss.IndexBinary


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_snapshot(root: Path, info: mi.CollectionInfo, cfg, ids: list[str], labels: list[str], full: np.ndarray,
                   index, binary: bool) -> Path:
    """Write the snapshot of collection `info.name` (into a temporary folder, renamed into place: a reader never sees
    half of one). Returns its folder."""
    final = root / info.name
    tmp = root / f".{info.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (faiss.write_index_binary if binary else faiss.write_index)(index, str(tmp / "shortlist.faiss"))
    np.save(tmp / "full.npy", full)
    np.save(tmp / "ids.npy", np.asarray(ids, dtype=str))
    np.save(tmp / "labels.npy", np.asarray(labels, dtype=str))
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
    manifest = {"format": FORMAT, "collection": info.name, "model_name": info.model_name,
                "model_version": info.model_version, "funnel": info.funnel.to_dict(), "rows": len(ids),
                "binary": binary, "settings": build_settings(cfg), "files": files, "written": time.time()}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def stale_reason(manifest: dict, info: mi.CollectionInfo, cfg, rows: int) -> str | None:
    """Why a snapshot does not describe what would be read from Milvus now, or None when it does."""
    expected = {"format": FORMAT, "collection": info.name, "model_name": info.model_name,
                "model_version": info.model_version,
                "funnel": info.funnel.to_dict(), "rows": rows, "settings": build_settings(cfg)}
    for key, want in expected.items():
        if manifest.get(key) != want:
            return f"its {key} is {manifest.get(key)!r}, the collection's {want!r}"
    return None


def open_snapshot(root: Path | None, info: mi.CollectionInfo, cfg, rows: int,
                  warn: Callable[[str], None]) -> Snapshot | None:
    """The collection's snapshot, verified (see the module doc), or None after a warning saying why not."""
    if root is None:
        return None
    folder = root / info.name
    if not (folder / MANIFEST).exists():
        warn(f"no snapshot of {info.name} in {root}: reading it from Milvus")
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        why = stale_reason(manifest, info, cfg, rows)
        if why is None:
            bad = [name for name, digest in manifest["files"].items() if _sha256(folder / name) != digest]
            why = f"checksum mismatch in {', '.join(bad)}" if bad else None
        if why is not None:
            warn(f"snapshot {folder} not used ({why}): reading {info.name} from Milvus")
            return None
        read = faiss.read_index_binary if manifest["binary"] else faiss.read_index
        index = read(str(folder / "shortlist.faiss"), faiss.IO_FLAG_MMAP_IFC)
        return Snapshot(np.load(folder / "ids.npy").tolist(), np.load(folder / "labels.npy").tolist(),
                        np.load(folder / "full.npy", mmap_mode="r"), index)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # unreadable or truncated files, a bad manifest
        warn(f"snapshot {folder} not used ({type(e).__name__}: {str(e)[:120]}): reading {info.name} from Milvus")
        return None


def remove_snapshot(root: Path | None, collection: str) -> None:
    """Delete a dropped collection's snapshot (none: nothing to do)."""
    if root is not None:
        shutil.rmtree(root / collection, ignore_errors=True)

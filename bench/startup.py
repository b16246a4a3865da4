"""Start-up of `mrl serve` (memory backend) at 1M items, with and without a snapshot: how long until /readyz answers.

A Milvus Lite collection of N rows (default 1,000,000: the retrieval benchmark's cached embeddings of augmented
Fashion-MNIST, or random unit vectors with --random) is built in a temporary directory, then:
  1. `mrl serve` with no snapshot: it reads every row back from Milvus and builds the shortlist (what a replica did
     before snapshots, and still does when its snapshot is missing, stale or corrupt);
  2. `mrl serve` from the snapshot (checksums verified, files memory-mapped), written beforehand as promotion writes it:
     the shortlist index over the prefix, the float16 re-rank table, ids and labels (built here from the vectors in
     hand: promotion has them from its verification read, and `mrl index snapshot` would read the 1M rows again).
The measurements go to a JSON file that bench/load.py puts in bench/results/load.md.

    python bench/startup.py --vectors artifacts/bench/fmnist-augmented-1000000-<digest>.npy
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from load import free_port, in_child, mrl, start, stop, wait_ready  # bench/load.py (this folder is on sys.path)

from mrl.config import load_config
from mrl.progress import progress
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel
from mrl.retrieval.shortlist import ShortlistIndex
from mrl.retrieval.snapshot import snapshot_root, write_snapshot

FUNNEL = Funnel(64, 200, (512,))  # what bench/retrieval.py found the float32 funnel needs at 1M


def catalogue(vectors: str | None, items: int) -> np.ndarray:
    """The first `items` rows of a .npy, or (None) random unit vectors."""
    if vectors is None:
        x = np.random.default_rng(0).standard_normal((items, 512), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.load(vectors, mmap_mode="r")[:items]


def ids_of(n: int, start: int = 0) -> list[str]:
    return [f"item-{i:07d}" for i in range(start, start + n)]


def labels_of(n: int, start: int = 0) -> list[str]:
    return [str(i % 10) for i in range(start, start + n)]


def build(uri: str, source: str | None, items: int, batch: int = 20_000) -> tuple[int, float]:
    """items_v1 with every row, behind the items alias, as a promotion leaves it (run it in a child process: Milvus
    Lite keeps the directory locked until the process that opened it exits), and its snapshot. Returns (rows, insert
    seconds, snapshot seconds)."""
    vectors = catalogue(source, items)
    client = mi.connect(uri)
    try:
        info = mi.CollectionInfo("items_v1", "bench", "1", FUNNEL, [8, 16, 32, 64, 128, 256, 512], 10, None)
        mi.create_collection(client, info, vectors.shape[1], "HNSW", 16, 40)
        started = time.perf_counter()
        bar = progress(None, "inserting", "row", total=len(vectors))
        for s in range(0, len(vectors), batch):
            rows = np.asarray(vectors[s:s + batch], dtype=np.float32)
            mi.insert_rows(client, "items_v1", np.array(ids_of(len(rows), s), dtype=object), labels_of(len(rows), s),
                           rows, FUNNEL.d0, batch)
            bar.update(len(rows))
        bar.close()
        mi.swap_alias(client, "items", "items_v1", expected=None)
        insert_s = time.perf_counter() - started
        started = time.perf_counter()
        cfg = load_config(None, []).retrieval
        shortlist = ShortlistIndex(vectors, FUNNEL.d0, "float32", cfg.index_type, cfg.hnsw_m, cfg.hnsw_ef_construction)
        write_snapshot(snapshot_root(None, uri), info, cfg, ids_of(len(vectors)), labels_of(len(vectors)),
                       np.asarray(vectors, dtype=np.float16), shortlist.index, binary=False)
        return len(vectors), insert_s, time.perf_counter() - started
    finally:
        client.close()


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory: anonymous (its own) and file-backed (memory-mapped pages, shared with other
    processes mapping the same files), MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon", "RssFile")}


def ready_seconds(uri: str, work: Path, extra: list[str], timeout_s: float) -> tuple[float, dict]:
    port = free_port()
    log = work / f"serve-{port}.log"
    proc = start(mrl("serve", "--milvus-uri", uri, "--port", str(port), "--no-model", "--reload-interval", "0",
                     "--query-log-dir", str(work / "queries"), *extra), log)
    try:
        ready, seconds = wait_ready(f"http://127.0.0.1:{port}", proc, log, timeout_s)
        for _ in range(200):  # touch the re-rank table's pages a search would (searches by id), then measure
            httpx.post(f"http://127.0.0.1:{port}/search", json={"id": f"item-{_ * 4999 % 1000:07d}"}, timeout=30)
        ready["memory_mb"] = memory_mb(proc.pid)
    finally:
        stop(proc)
    return seconds, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", help="a float32 (N, 512) .npy (bench/retrieval.py's cache)")
    parser.add_argument("--random", action="store_true", help="random unit vectors instead of --vectors")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", default="bench/results/startup.json")
    args = parser.parse_args()
    if args.random == bool(args.vectors):
        parser.error("give exactly one of --vectors or --random")
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        uri = str(work / "milvus.db")
        rows_built, insert_s, snapshot_s = in_child(build, uri, args.vectors, args.items)
        print(f"{rows_built:,} rows inserted into Milvus Lite in {insert_s:.0f}s", flush=True)
        rows = []
        size = sum(p.stat().st_size for p in (work / "milvus.db.snapshots" / "items_v1").iterdir())
        seconds, ready = ready_seconds(uri, work, ["--set", f"retrieval.snapshot_dir={work / 'none'}"], args.timeout)
        rows.append({"from": "Milvus (read + shortlist build)", "ready_s": seconds, "memory_mb": ready["memory_mb"]})
        print(f"ready from Milvus in {seconds:.1f}s: {ready}", flush=True)
        seconds, ready = ready_seconds(uri, work, [], args.timeout)
        rows.append({"from": "snapshot (memory-mapped)", "ready_s": seconds, "memory_mb": ready["memory_mb"]})
        print(f"ready from the snapshot in {seconds:.1f}s: {ready}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    note = (f"{'random unit vectors' if args.random else Path(args.vectors).name}, funnel {FUNNEL.name()}; "
            f"insert into Milvus Lite {insert_s:.0f} s; snapshot built and written in {snapshot_s:.0f} s, "
            f"{size / 1e9:.2f} GB on disk")
    out = Path(args.out)
    out.write_text(json.dumps({"items": rows_built, "rows": rows, "note": note}, indent=1))
    print(json.dumps(json.loads(out.read_text()), indent=1))


if __name__ == "__main__":
    main()

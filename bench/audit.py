"""Cost of the service's live recall audit (mrl.service.audit), side by side in one run: the exact full-dim search each
audited query costs on each backend, and the served search's latency with the audit off, at 1% and at 100%.

A collection of N random unit vectors (default 70,000 x 512, the demo's size) is built in a temporary Milvus Lite file
with a funnel 16@400 -> 512. Per audited query: the memory backend's scan of its float32 table
(`MemoryFunnelIndex.exact`), the milvus backend's Milvus COSINE search of `full` (`MilvusExactSearch`, what it does
on a Milvus server), and what it does on Milvus Lite (the stored vectors read once, then scanned). Then the service
(FastAPI TestClient, one client) answers the same vector searches on each backend with retrieval.audit_fraction 0,
0.01 and 1.

    python bench/audit.py --out bench/results/audit.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from mrl.config import load_config
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.exact import MilvusExactSearch
from mrl.retrieval.funnel import Funnel
from mrl.retrieval.memory_index import MemoryFunnelIndex
from mrl.service import create_app


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def build(client, n: int, dim: int) -> np.ndarray:
    vectors = unit(np.random.default_rng(0).standard_normal((n, dim)))
    info = mi.CollectionInfo("items_v1", "bench", "1", Funnel(16, 400, (dim,), 4), [16, 64, dim], 10, None)
    mi.create_collection(client, info, dim, "HNSW", 16, 40)
    mi.insert_rows(client, info.name, np.array([f"item-{i}" for i in range(n)]), ["x"] * n, vectors, 16, 5000)
    client.create_alias(collection_name=info.name, alias="items")
    return vectors


def timed(fn, queries: np.ndarray) -> list[float]:
    out = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        out.append(1000 * (time.perf_counter() - started))
    return out


def exact_costs(client, cfg, queries: np.ndarray) -> list[tuple[str, list[float], str]]:
    memory = MemoryFunnelIndex(client, "items_v1", cfg.retrieval)
    started = time.perf_counter()
    memory.exact(queries[0], 10)  # the float32 table, made at first use
    table_mib = memory._table(memory.full.shape[1]).nbytes / 2**20
    first = f"table made in {time.perf_counter() - started:.1f} s, {table_mib:.0f} MiB"
    rows = [("memory: scan of the float32 table", timed(lambda q: memory.exact(q, 10), queries), first)]
    milvus = MilvusExactSearch(client, "items_v1")
    milvus.way = "milvus"  # what a Milvus server gets; on Milvus Lite the default is the scan below
    rows.append(("milvus: Milvus Lite COSINE search of `full`", timed(lambda q: milvus(q, 10), queries),
                 "one round trip, nothing held"))
    scan = MilvusExactSearch(client, "items_v1")
    started = time.perf_counter()
    scan(queries[0], 10)
    first = f"vectors read once in {time.perf_counter() - started:.1f} s"
    rows.append(("milvus on Milvus Lite: read once, then scan", timed(lambda q: scan(q, 10), queries), first))
    return rows


def service_latency(cfg_sets: list[str], uri: str, client, queries: np.ndarray, qlog: Path) -> tuple[list[float], dict]:
    cfg = load_config(None, cfg_sets)
    with TestClient(create_app(cfg, uri, load_model=False, client=client, query_log_dir=qlog,
                               reload_interval_s=0)) as http:
        http.post("/search", json={"vector": queries[0].tolist()})
        ms = timed(lambda q: http.post("/search", json={"vector": q.tolist(), "k": 10}), queries)
        audit = http.get("/readyz").json()["audit"]
    return ms, audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=70_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit.md"))
    args = parser.parse_args()
    cfg = load_config(None, [])
    with tempfile.TemporaryDirectory() as tmp:
        client = mi.connect(str(Path(tmp) / "milvus.db"))
        started = time.perf_counter()
        build(client, args.items, args.dim)
        print(f"built {args.items:,} x {args.dim} in {time.perf_counter() - started:.0f} s", flush=True)
        queries = unit(np.random.default_rng(1).standard_normal((args.queries, args.dim)))
        lines = [f"# Recall audit cost ({args.items:,} items x {args.dim} dims, {args.queries} queries, k = 10)", "",
                 "Exact search per audited query (on the audit thread, never on the request path):", "",
                 "| exact search | p50 ms | p99 ms | once |", "|---|---:|---:|---|"]
        for name, ms, note in exact_costs(client, cfg, queries):
            lines.append(f"| {name} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} | {note} |")
            print(lines[-1], flush=True)
        lines += ["", "Served vector search (one client, FastAPI TestClient), by backend and audit fraction (audited and",
                  "dropped: when the last search was answered):", "",
                  "| backend | audit_fraction | p50 ms | p99 ms | audited | dropped |", "|---|---:|---:|---:|---:|---:|"]
        for backend, fraction in [("memory", 0), ("memory", 0.01), ("memory", 1), ("milvus", 0), ("milvus", 0.01),
                                  ("milvus", 1)]:
            sets = [f"retrieval.audit_fraction={fraction}", f"retrieval.serve_backend={backend}"]
            ms, audit = service_latency(sets, str(Path(tmp) / "milvus.db"), client, queries,
                                        Path(tmp) / f"qlog-{backend}-{fraction}")
            lines.append(f"| {backend} | {fraction:g} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} | "
                         f"{audit.get('audited', 0)} | {audit.get('dropped', 0)} |")
            print(lines[-1], flush=True)
        client.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

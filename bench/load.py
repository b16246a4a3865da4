"""Load test of `mrl serve` on loopback: concurrent clients for a fixed time against each serving backend, side
by side in one run. Bounded: every phase stops by itself, and the servers it starts are stopped at the end.

For each backend (default: memory, then milvus) it starts `mrl serve` on a free port over the promoted index
(default: the demo's ./milvus.db), waits for /readyz, then runs phases of C concurrent closed-loop clients (no
think time) for D seconds each. Requests: search by item id and by vector (a catalogue vector plus noise, so it
is not an item), k = 10. Reports throughput, client-side p50/p99, server-side p50/p99 (the response's
timings_ms.total) and errors.

    python bench/load.py --milvus-uri milvus.db --out bench/results/load.md
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np

from mrl.retrieval import milvus_index as mi

TARGET_P99_MS = 50.0  # 50 clients, 70k items
TARGET_EXAMPLE_MS = 5.0  # one client, server-side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_queries(uri: str, alias: str, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Item ids and full vectors of n served items (read before the server takes the Milvus Lite file)."""
    client = mi.connect(uri)
    try:
        name = mi.alias_target(client, alias)
        if name is None:
            raise SystemExit(f"error: Milvus alias {alias} does not exist at {uri}; run `make demo` (or "
                             "`mrl index promote`) first")
        client.load_collection(name)
        rows = client.query(name, filter="", output_fields=["id", "full"], limit=n)
    finally:
        client.close()
    rng = np.random.default_rng(seed)
    vectors = np.array([r["full"] for r in rows], dtype=np.float32)
    noisy = vectors + 0.05 * vectors.std() * rng.standard_normal(vectors.shape).astype(np.float32)
    return [r["id"] for r in rows], noisy


def start_server(uri: str, backend: str, port: int, params: str | None, log_dir: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mrl.cli", "serve", "--milvus-uri", uri, "--port", str(port), "--no-model",
           "--query-log-dir", log_dir, "--set", f"retrieval.serve_backend={backend}"]
    if params:
        cmd += ["--params", params]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float) -> tuple[dict, float]:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            sys.exit(f"error: mrl serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            r = httpx.get(f"{base}/readyz", timeout=30)
            if r.status_code == 200:
                return r.json(), time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    sys.exit(f"error: mrl serve not ready after {timeout_s:.0f}s")


async def run_phase(base: str, clients: int, duration_s: float, ids: list[str], vectors: np.ndarray) -> dict:
    """`clients` concurrent loops, each sending its next request as soon as the last one is answered. aiohttp,
    not httpx: with 50 connections httpx's client took a whole core and became the bottleneck (measured)."""
    latencies, server_ms, errors = [], [], {}
    deadline = time.perf_counter() + duration_s
    bodies = [json.dumps({"id": i, "k": 10}).encode() for i in ids] + [
        json.dumps({"vector": v.tolist(), "k": 10}).encode() for v in vectors]

    async def client_loop(http: aiohttp.ClientSession, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.perf_counter() < deadline:
            body = bodies[rng.integers(len(bodies))]
            started = time.perf_counter()
            try:
                async with http.post("/search", data=body, headers={"content-type": "application/json"}) as r:
                    payload = await r.read()
                    elapsed = 1000 * (time.perf_counter() - started)
                    if r.status == 200:
                        latencies.append(elapsed)
                        server_ms.append(json.loads(payload)["timings_ms"]["total"])
                    else:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
            except (TimeoutError, aiohttp.ClientError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(http, seed) for seed in range(clients)))
        wall = time.perf_counter() - started
    lat, srv = np.array(latencies or [np.nan]), np.array(server_ms or [np.nan])
    return {"clients": clients, "requests": len(latencies), "rps": len(latencies) / wall,
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "server_p50": float(np.percentile(srv, 50)), "server_p99": float(np.percentile(srv, 99)),
            "errors": sum(errors.values()), "error_kinds": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milvus-uri", default="milvus.db", help="Milvus Lite file (or server URL) with a promoted index")
    parser.add_argument("--params", default=None, help="params.yaml (default: the embedded defaults)")
    parser.add_argument("--backends", nargs="+", default=["memory", "milvus"], choices=["memory", "milvus"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50], help="concurrent clients per phase")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--out", default="bench/results/load.md")
    args = parser.parse_args()
    uri = mi.resolve_milvus_uri(args.milvus_uri)
    # In a child process: Milvus Lite keeps its file lock until the process that opened it exits.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ids, vectors = pool.submit(sample_queries, uri, "items", 500).result()
    results = []
    for backend in args.backends:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as log_dir:
            proc = start_server(uri, backend, port, args.params, log_dir)
            try:
                ready, ready_s = wait_ready(base, proc, args.ready_timeout)
                print(f"{backend}: ready in {ready_s:.1f}s: {ready}", flush=True)
                asyncio.run(run_phase(base, 4, 3.0, ids, vectors))  # warm-up
                for clients in args.clients:
                    r = asyncio.run(run_phase(base, clients, args.duration, ids, vectors))
                    r |= {"backend": backend, "ready_s": ready_s, "ready": ready}
                    print(f"{backend}, {clients} clients: {r['rps']:.1f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} "
                          f"ms, server p50 {r['server_p50']:.2f} ms, errors {r['errors']}", flush=True)
                    results.append(r)
            finally:
                stop_server(proc)
    write_report(args, results)


def write_report(args, results: list[dict]) -> None:
    lines = ["# Load: `mrl serve` under concurrent clients, per serving backend", "",
             f"Measured by `bench/load.py`: closed-loop clients (no think time) for {args.duration:.0f} s per phase on "
             "loopback, the client (one asyncio process, aiohttp) on the same 2 cores as the server; "
             "half the requests search by item id, half by a vector that is not an item; k = 10.", "",
             "| backend | clients | requests | req/s | p50 ms | p99 ms | server p50 ms | server p99 ms | errors | target |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        target = ""
        if r["clients"] >= 50:
            ok = r["p99"] <= TARGET_P99_MS and r["errors"] == 0
            target = f"p99 <= {TARGET_P99_MS:.0f} ms, 0 errors: {'met' if ok else 'NOT met'}"
        elif r["clients"] == 1:
            target = (f"server p50 <= {TARGET_EXAMPLE_MS:.0f} ms: "
                      f"{'met' if r['server_p50'] <= TARGET_EXAMPLE_MS else 'NOT met'}")
        lines.append(f"| {r['backend']} | {r['clients']} | {r['requests']:,} | {r['rps']:.1f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['server_p50']:.2f} | {r['server_p99']:.2f} | {r['errors']} | {target} |")
    by = {(r["backend"], r["clients"]): r for r in results}
    lines.append("")
    for clients in sorted({r["clients"] for r in results}):
        if ("memory", clients) in by and ("milvus", clients) in by:
            m, b = by[("memory", clients)], by[("milvus", clients)]
            lines.append(f"- {clients} clients: memory vs milvus backend: {m['rps'] / b['rps']:.1f}x the throughput, "
                         f"p99 {b['p99'] / m['p99']:.1f}x lower.")
    for backend in dict.fromkeys(r["backend"] for r in results):
        r = next(x for x in results if x["backend"] == backend)
        lines.append(f"- {backend}: ready in {r['ready_s']:.1f}s after start; /readyz said {r['ready']}.")
    lines += [f"- Index: `{args.milvus_uri}`. Machine: {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} at the end.", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Load test of `mrl serve` on loopback, the client on the same 2 cores: throughput and tails per serving setup, the
start-up with and without a snapshot, and a run in which the index changes and a worker is killed under load.
Bounded: every phase stops by itself, and every server it starts is stopped at the end.

It works on a copy of the promoted index (default: the demo's ./milvus.db), never on the index itself. Setups:
  - memory backend, one process, each search alone (--max-batch 1): the service before micro-batching;
  - memory backend, one process, micro-batching (the default);
  - memory backend, 2 worker processes over `milvus-lite server`, both started from the snapshot;
  - milvus backend against a real Milvus 2.3.5 server (`milvus-server`, dev extra), the collection copied into it.
Load: closed loop (C clients, each sending its next request when answered: the saturation throughput) and open loop
(requests sent at a fixed rate whatever is outstanding, over at most C connections: the tail at that load, with no
coordinated omission: a request's latency counts from when it was due). Requests: half by item id, half by a
vector that is not an item; k = 10.

    python bench/load.py --milvus-uri milvus.db --out bench/results/load.md
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import numpy as np

from mrl.retrieval import milvus_index as mi

TARGET_RPS, TARGET_P99_MS, TARGET_CLIENTS = 1000.0, 50.0, 50  # 1,000 searches/s at 50 clients, p99 <= 50 ms
TARGET_SINGLE_P50_MS = 1.5  # one client, client-side
TARGET_READY_S = 30.0  # start-up from a snapshot at 1M items (bench/startup.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_queries(uri: str, alias: str, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Item ids and full vectors of n served items (read before a server takes the Milvus Lite directory)."""
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


def in_child(fn, *args):
    """Run fn in a spawned process: Milvus Lite keeps its directory locked until the process that opened it exits."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def mrl(*args: str) -> list[str]:
    return [sys.executable, "-m", "mrl.cli", *args]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> tuple[dict, float]:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            sys.exit(f"error: the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{base}/readyz", timeout=30)
            if r.status_code == 200:
                return r.json(), time.perf_counter() - started
        time.sleep(0.2)
    stop(proc)
    sys.exit(f"error: not ready after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            sys.exit(f"error: exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    stop(proc)
    sys.exit(f"error: nothing listening on port {port} after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


# ------------------------------------------------------------------------------------------------------ the client

@dataclass
class Tally:
    """What the clients saw in one phase."""

    latencies: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    served: list[tuple[float, str]] = field(default_factory=list)  # (seconds into the phase, collection) per answer

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self, wall: float) -> dict:
        lat, srv = np.array(self.latencies or [np.nan]), np.array(self.server_ms or [np.nan])
        return {"requests": len(self.latencies), "rps": len(self.latencies) / wall,
                "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                "server_p50": float(np.percentile(srv, 50)), "server_p99": float(np.percentile(srv, 99)),
                "errors": sum(self.errors.values()), "error_kinds": dict(self.errors), "retried": self.retried}


async def post(http: aiohttp.ClientSession, body: bytes, tally: Tally, due: float, phase_start: float) -> None:
    """One search; a connection reset (a killed worker) is retried once, as a load balancer would: searches are
    idempotent. Latency counts from `due`."""
    for attempt in (0, 1):
        try:
            async with http.post("/search", data=body, headers={"content-type": "application/json"}) as r:
                payload = await r.read()
            if r.status != 200:
                tally.error(str(r.status))
                return
            answer = json.loads(payload)
            now = time.perf_counter()
            tally.latencies.append(1000 * (now - due))
            tally.server_ms.append(answer["timings_ms"]["total"])
            tally.served.append((now - phase_start, answer["collection"]))
            return
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if attempt:
                tally.error(type(e).__name__)
            else:
                tally.retried += 1
        except (TimeoutError, aiohttp.ClientError) as e:
            tally.error(type(e).__name__)
            return


def request_bodies(ids: list[str], vectors: np.ndarray) -> list[bytes]:
    return [json.dumps({"id": i, "k": 10}).encode() for i in ids] + [
        json.dumps({"vector": v.tolist(), "k": 10}).encode() for v in vectors]


async def closed_loop(base: str, clients: int, duration_s: float, bodies: list[bytes]) -> dict:
    """`clients` loops, each sending its next request as soon as the last is answered. aiohttp, not httpx: with 50
    connections httpx's client took a whole core (measured)."""
    tally, started = Tally(), time.perf_counter()
    deadline = started + duration_s

    async def loop(http: aiohttp.ClientSession, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.perf_counter() < deadline:
            await post(http, bodies[rng.integers(len(bodies))], tally, time.perf_counter(), started)

    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(*(loop(http, seed) for seed in range(clients)))
    return {"mode": "closed", "clients": clients} | tally.summary(time.perf_counter() - started)


async def open_loop(base: str, clients: int, rate: float, duration_s: float, bodies: list[bytes],
                    events: list[tuple[float, callable]] = ()) -> tuple[dict, Tally]:
    """Requests due every 1/rate s for duration_s, over at most `clients` connections (a request waits for a free
    one, and that wait counts). `events`: (seconds in, fn) run in a thread at that time, e.g. an alias swap."""
    tally, started = Tally(), time.perf_counter()
    rng = np.random.default_rng(0)
    pending, done_events = set(), []
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        pending_events = sorted(events, key=lambda e: e[0])
        for i in range(int(rate * duration_s)):
            due = started + i / rate
            while pending_events and due - started >= pending_events[0][0]:
                _, fn = pending_events.pop(0)
                done_events.append(asyncio.create_task(asyncio.to_thread(fn)))
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(post(http, bodies[rng.integers(len(bodies))], tally, due, started))
            pending.add(task)  # finished ones leave: thousands of done tasks would slow the client's garbage collector
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending, *done_events)
    return {"mode": "open", "clients": clients, "offered": rate} | tally.summary(time.perf_counter() - started), tally


# ------------------------------------------------------------------------------------------------ the setups

@dataclass
class Setup:
    name: str
    serve_args: list[str]
    milvus_uri: str
    phases: list[tuple] = field(default_factory=list)  # ("closed", clients) | ("open", clients, rate)


def measured(phase):
    """Run a phase's coroutine with the client's garbage collector off: its pauses would show as server latency."""
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(phase)
    finally:
        gc.enable()


def run_setup(setup: Setup, work: Path, bodies: list[bytes], duration: float, ready_timeout: float) -> list[dict]:
    port = free_port()
    base, log = f"http://127.0.0.1:{port}", work / f"serve-{port}.log"
    proc = start(mrl("serve", "--milvus-uri", setup.milvus_uri, "--port", str(port), "--no-model",
                     "--query-log-dir", str(work / f"queries-{port}"), *setup.serve_args), log)
    rows = []
    try:
        ready, ready_s = wait_ready(base, proc, log, ready_timeout)
        print(f"{setup.name}: ready in {ready_s:.1f}s ({ready.get('backend')})", flush=True)
        asyncio.run(closed_loop(base, 4, 3.0, bodies))  # warm-up
        for phase in setup.phases:
            if phase[0] == "closed":
                r = measured(closed_loop(base, phase[1], duration, bodies))
            else:
                r, _ = measured(open_loop(base, phase[1], phase[2], duration, bodies))
            r |= {"setup": setup.name, "ready_s": ready_s}
            print(f"  {describe(r)}", flush=True)
            rows.append(r)
    finally:
        stop(proc)
    return rows


def describe(r: dict) -> str:
    load = f"{r['clients']} clients closed loop" if r["mode"] == "closed" else (
        f"{r['offered']:.0f}/s open loop over {r['clients']} connections")
    return (f"{load}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.1f} ms, server p50 "
            f"{r['server_p50']:.2f} ms, errors {r['errors']}")


def lite_server(data_dir: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = work / "milvus-lite-server.log"
    proc = start([str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir", str(data_dir),
                  "--host", "127.0.0.1", "--port", str(port)], log)
    wait_port(port, proc, log, 60)
    return proc, f"http://127.0.0.1:{port}"


def copy_rows(source, target, name: str, info: mi.CollectionInfo) -> int:
    """Collection `name`'s rows written into `info.name` at `target` (created under `info`; the target's layout)."""
    from mrl.retrieval.memory_index import read_collection

    source.load_collection(name)  # Milvus Lite reopens a collection released
    ids, labels, full = read_collection(source, name)
    mi.create_collection(target, info, full.shape[1], "HNSW", 16, 40)
    mi.insert_rows(target, info.name, np.asarray(ids, dtype=object), labels, full, info.funnel.d0, 5000)
    return len(ids)


def copy_collection(source_uri: str, target_uri: str, alias: str = "items") -> int:
    """The collection behind `alias` copied into another Milvus (same name, info and rows), behind the same alias."""
    source, target = mi.connect(source_uri), mi.connect(target_uri)
    try:
        name = mi.alias_target(source, alias)
        rows = copy_rows(source, target, name, mi.CollectionInfo.read(source, name))
        mi.swap_alias(target, alias, name, expected=None)
        return rows
    finally:
        source.close()
        target.close()


def milvus_server(work: Path) -> tuple[subprocess.Popen, str] | None:
    exe = shutil.which("milvus-server") or str(Path(sys.executable).with_name("milvus-server"))
    if not Path(exe).exists():
        print("milvus-server not installed (pip install milvus==2.3.5, the dev extra): skipping that setup")
        return None
    port = free_port()
    log = work / "milvus-server.log"
    proc = start([exe, "--data", str(work / "milvus-server"), "--proxy-port", str(port), "--etcd-port",
                  str(free_port())], log)
    wait_port(port, proc, log, 120)
    time.sleep(5)  # the proxy listens before the coordinators are up
    return proc, f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------- the index changing

def second_version(uri: str, snapshots: Path) -> str:
    """items_v2: the catalogue of items_v1 re-promoted (as model version 2), with its snapshot, not yet served."""
    from dataclasses import replace

    from mrl.config import load_config
    from mrl.retrieval.memory_index import MemoryFunnelIndex

    client = mi.connect(uri)
    try:
        info = mi.CollectionInfo.read(client, "items_v1")
        new = replace(info, name="items_v2", model_version="2", previous="items_v1")
        copy_rows(client, client, "items_v1", new)
        MemoryFunnelIndex(client, "items_v2", load_config(None, []).retrieval).write_snapshot(snapshots)
        return new.name
    finally:
        client.close()


def worker_pids(manager: int) -> list[int]:
    """The uvicorn manager's worker processes (its multiprocessing children, not the resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(manager)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")]


def under_change(uri: str, snapshots: Path, work: Path, bodies: list[bytes], clients: int, rate: float,
                 duration: float, ready_timeout: float) -> dict:
    """Two workers under an open-loop load while the alias moves to items_v2 (the swap a promotion ends with; the
    workers follow within 2 s, each loading v2 from its snapshot), then items_v1 is dropped (with its snapshot, as the
    next promotion would after retrieval.drop_grace_s), then one worker is killed with SIGKILL."""
    from mrl.retrieval.snapshot import remove_snapshot

    print("under change: preparing items_v2 (the same catalogue, as model version 2) and its snapshot", flush=True)
    second_version(uri, snapshots)
    port = free_port()
    base, log = f"http://127.0.0.1:{port}", work / "serve-change.log"
    proc = start(mrl("serve", "--milvus-uri", uri, "--port", str(port), "--no-model", "--workers", "2",
                     "--reload-interval", "2", "--query-log-dir", str(work / "queries-change"),
                     "--set", f"retrieval.snapshot_dir={snapshots}"), log)
    times: dict[str, float] = {}

    def mark(what: str) -> None:
        times[what] = time.perf_counter()

    def swap() -> None:
        client = mi.connect(uri)
        mi.swap_alias(client, "items", "items_v2", expected="items_v1")
        client.close()
        mark("swap")

    def drop() -> None:
        client = mi.connect(uri)
        client.drop_collection("items_v1")
        client.close()
        remove_snapshot(snapshots, "items_v1")
        mark("drop")

    def kill() -> None:
        times["killed_pid"] = float(worker_pids(proc.pid)[0])
        os.kill(int(times["killed_pid"]), signal.SIGKILL)
        mark("kill")

    try:
        wait_ready(base, proc, log, ready_timeout)
        before = worker_pids(proc.pid)
        asyncio.run(closed_loop(base, 4, 3.0, bodies))
        mark("start")
        r, tally = measured(open_loop(base, clients, rate, duration, bodies,
                                      [(0.2 * duration, swap), (0.5 * duration, drop), (0.7 * duration, kill)]))
        time.sleep(3)
        after = worker_pids(proc.pid)
    finally:
        stop(proc)
    at = {k: times[k] - times["start"] for k in ("swap", "drop", "kill")}
    v1_after_drop = sum(1 for t, c in tally.served if c == "items_v1" and t > at["drop"])
    last_v1 = max((t for t, c in tally.served if c == "items_v1"), default=float("nan"))
    replaced = int(times["killed_pid"]) not in after and len(after) == len(before)
    answered_after_kill = sum(1 for t, _ in tally.served if t > at["kill"])
    print(f"  {describe(r)}; swap at {at['swap']:.1f}s, last items_v1 answer at {last_v1:.1f}s, drop at "
          f"{at['drop']:.1f}s, kill at {at['kill']:.1f}s, workers {before} -> {after}", flush=True)
    return r | {"setup": "2 workers, index changing", "at": at, "last_v1": last_v1, "v1_after_drop": v1_after_drop,
                "replaced": replaced, "workers_before": before, "workers_after": after,
                "answered_after_kill": answered_after_kill}


# ------------------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milvus-uri", default="milvus.db", help="Milvus Lite data directory with a promoted index "
                                                                  "(copied; never changed)")
    parser.add_argument("--clients", type=int, default=TARGET_CLIENTS, help="concurrent clients / connections")
    parser.add_argument("--rate", type=float, default=TARGET_RPS, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--no-milvus-server", action="store_true", help="skip the Milvus 2.3.5 server setup")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--startup", default="bench/results/startup.json",
                        help="bench/startup.py's measurements at 1M, put in the report when present")
    parser.add_argument("--out", default="bench/results/load.md")
    args = parser.parse_args()
    source = Path(mi.resolve_milvus_uri(args.milvus_uri))
    if not source.is_dir():
        sys.exit(f"error: --milvus-uri {args.milvus_uri}: no Milvus Lite data directory there; run `make demo` first")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        rows, extra = run_all(args, source, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(args, rows, extra, time.perf_counter() - started)


def run_all(args, source: Path, work: Path) -> tuple[list[dict], dict]:
    uri = str(work / "milvus.db")
    shutil.copytree(source, uri, ignore=shutil.ignore_patterns("LOCK"))
    ids, vectors = in_child(sample_queries, uri, "items", 500)
    bodies = request_bodies(ids, vectors)
    c, rate = args.clients, args.rate
    phases = [("closed", 1), ("closed", c), ("open", c, rate)]
    rows: list[dict] = []
    no_snapshot = ["--set", f"retrieval.snapshot_dir={work / 'no-snapshots'}"]
    rows += run_setup(Setup("memory, 1 process, each search alone", ["--max-batch", "1", *no_snapshot], uri, phases),
                      work, bodies, args.duration, args.ready_timeout)
    began = time.perf_counter()
    subprocess.run(mrl("index", "snapshot", "--milvus-uri", uri), check=True, capture_output=True)
    extra = {"snapshot_write_s": time.perf_counter() - began}
    rows += run_setup(Setup("memory, 1 process, micro-batching", [], uri, phases), work, bodies, args.duration,
                      args.ready_timeout)
    snapshots = Path(uri + ".snapshots")
    lite, lite_uri = lite_server(Path(uri), work)
    try:
        rows += run_setup(Setup("memory, 2 workers, micro-batching", [
            "--workers", "2", "--set", f"retrieval.snapshot_dir={snapshots}"], lite_uri, phases), work, bodies,
            args.duration, args.ready_timeout)
        extra["change"] = under_change(lite_uri, snapshots, work, bodies, c, rate / 2, 2 * args.duration,
                                       args.ready_timeout)
    finally:
        stop(lite)
    if not args.no_milvus_server and (server := milvus_server(work)) is not None:
        proc, server_uri = server
        try:
            print("copying items_v1 into the Milvus 2.3.5 server", flush=True)
            extra["server_rows"] = in_child(copy_collection, str(source), server_uri)
            rows += run_setup(Setup("milvus backend, Milvus 2.3.5 server", [
                "--set", "retrieval.serve_backend=milvus"], server_uri, [("closed", 1), ("closed", c)]), work, bodies,
                args.duration, args.ready_timeout)
        finally:
            stop(proc)
    return rows, extra


def target_of(r: dict, rate: float) -> str:
    if r["mode"] == "open" and r["clients"] >= TARGET_CLIENTS:
        ok = r["rps"] >= 0.98 * rate >= 0.98 * TARGET_RPS and r["p99"] <= TARGET_P99_MS and r["errors"] == 0
        return (f"{TARGET_RPS:,.0f}/s at {TARGET_CLIENTS} clients, p99 <= {TARGET_P99_MS:.0f} ms, 0 errors: "
                f"{'met' if ok else 'NOT met'}")
    if r["mode"] == "closed" and r["clients"] == 1 and r["setup"].startswith("memory"):
        return f"p50 <= {TARGET_SINGLE_P50_MS} ms: {'met' if r['p50'] <= TARGET_SINGLE_P50_MS else 'NOT met'}"
    return ""


def write_report(args, rows: list[dict], extra: dict, total_s: float) -> None:
    lines = ["# Load: `mrl serve` under concurrent clients", "",
             f"Measured by `bench/load.py` on a copy of `{args.milvus_uri}`: {args.duration:.0f} s per phase on "
             "loopback, the client (one asyncio process, aiohttp) on the same 2 cores as the server; half the requests "
             "search by item id, half by a vector that is not an item; k = 10. Closed loop: each client sends its next "
             "request when answered (the saturation throughput; by Little's law its latency is clients / throughput). "
             "Open loop: requests due at a fixed rate over at most that many connections, latency counted from when "
             "each was due.", "",
             "| setup | load | answered | req/s | p50 ms | p99 ms | server p50 ms | server p99 ms | errors | target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        load = f"{r['clients']} clients, closed" if r["mode"] == "closed" else (
            f"{r['offered']:,.0f}/s, {r['clients']} conns, open")
        lines.append(f"| {r['setup']} | {load} | {r['requests']:,} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.1f} "
                     f"| {r['server_p50']:.2f} | {r['server_p99']:.2f} | {r['errors']} | {target_of(r, args.rate)} |")
    by = {(r["setup"], r["mode"], r["clients"]): r for r in rows}
    lines += ["", "## Start-up (until /readyz answers)", "",
              "| items | from | ready s | resident MB: own / memory-mapped (after 200 searches) | target |",
              "|---:|---|---:|---|---|"]
    for setup, source in (("memory, 1 process, each search alone", "Milvus (read + shortlist build)"),
                          ("memory, 1 process, micro-batching", "snapshot (memory-mapped)"),
                          ("memory, 2 workers, micro-batching", "snapshot, 2 workers")):
        r = by.get((setup, "closed", 1))
        if r:
            lines.append(f"| 70,000 | {source} | {r['ready_s']:.1f} | | |")
    startup = Path(args.startup)
    if startup.exists():
        s = json.loads(startup.read_text())
        for row in s["rows"]:
            target = ""
            if row["from"].startswith("snapshot"):
                target = f"<= {TARGET_READY_S:.0f} s: {'met' if row['ready_s'] <= TARGET_READY_S else 'NOT met'}"
            mb = row.get("memory_mb", {})
            memory = f"{mb['RssAnon']:,.0f} / {mb['RssFile']:,.0f}" if mb else ""
            lines.append(f"| {s['items']:,} | {row['from']} | {row['ready_s']:.1f} | {memory} | {target} |")
        lines.append(f"\n1M rows: `bench/startup.py` ({s['note']}).")
    lines.append(f"\nSnapshot of the 70k collection written by `mrl index snapshot` in {extra['snapshot_write_s']:.1f} s "
                 "(read from Milvus, shortlist built, files checksummed).")
    if (ch := extra.get("change")) is not None:
        at = ch["at"]
        ok = ch["errors"] == 0 and ch["v1_after_drop"] == 0 and ch["replaced"]
        lines += ["", "## Under change: the alias swapped, the old collection dropped, a worker killed", "",
                  f"2 workers (`--workers 2`, `--reload-interval 2`) over `milvus-lite server`, {ch['offered']:,.0f}/s "
                  f"open loop over {ch['clients']} connections for {2 * args.duration:.0f} s. At {at['swap']:.1f} s "
                  f"the items alias moved to items_v2 (the swap a promotion ends with; each worker followed, loading v2 "
                  f"from its snapshot); at {at['drop']:.1f} s items_v1 was dropped with its snapshot (as the next "
                  f"promotion does after retrieval.drop_grace_s); at {at['kill']:.1f} s one worker was killed with "
                  "SIGKILL.", "",
                  "| answered | req/s | p50 ms | p99 ms | errors | retried (connection reset) | last items_v1 answer | "
                  "items_v1 answers after its drop | worker replaced | answered after the kill | target |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
                  f"| {ch['requests']:,} | {ch['rps']:,.0f} | {ch['p50']:.2f} | {ch['p99']:.1f} | {ch['errors']} | "
                  f"{ch['retried']} | {ch['last_v1']:.1f} s | {ch['v1_after_drop']} | "
                  f"{'yes' if ch['replaced'] else 'NO'} ({ch['workers_before']} -> {ch['workers_after']}) | "
                  f"{ch['answered_after_kill']:,} | 0 errors, nothing from a dropped collection, worker replaced: "
                  f"{'met' if ok else 'NOT met'} |"]
    lines += ["", "## Backends side by side", ""]
    for clients in (1, args.clients):
        m = by.get(("memory, 1 process, micro-batching", "closed", clients))
        s = by.get(("milvus backend, Milvus 2.3.5 server", "closed", clients))
        if m and s:
            lines.append(f"- {clients} clients, closed loop: memory backend {m['rps']:,.0f} req/s (p50 {m['p50']:.2f} ms) "
                         f"vs milvus backend on a Milvus 2.3.5 server {s['rps']:,.0f} req/s (p50 {s['p50']:.1f} ms): "
                         f"{m['rps'] / s['rps']:.0f}x the throughput.")
    if "server_rows" in extra:
        lines.append(f"- The server setup: items_v1's {extra['server_rows']:,} rows copied into a Milvus 2.3.5 "
                     "standalone server (`milvus-server`, one vector field per collection: `full` is an ARRAY field), "
                     "HNSW on the prefix; each search is one round trip to it.")
    lines += [f"- Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; total "
              f"{total_s / 60:.1f} min.", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""`mrl serve --workers 2` for real: two processes on one port over `milvus-lite server`, both started from the
snapshot; one killed with SIGKILL is replaced while the other keeps answering. And the clear refusal of several
workers over a Milvus Lite data directory (one process only)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import load_config
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel
from mrl.retrieval.memory_index import MemoryFunnelIndex

pytestmark = pytest.mark.slow  # a Milvus Lite server and two uvicorn workers (~30 s on 2 busy cores)

N, DIM = 1000, 16
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from load import free_port, stop, wait_port, worker_pids  # noqa: E402  (bench/load.py: the same process handling)


def test_several_workers_over_a_milvus_lite_directory_are_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--workers", "2", "--milvus-uri", str(tmp_path / "milvus.db")])
    assert result.exit_code == 2
    assert "--workers 2: the Milvus Lite data directory" in result.output and "milvus-lite server" in result.output
    assert "Traceback" not in result.output


def wait_for(fn, timeout_s: float = 60.0):
    """fn's result once it stops failing (HTTP errors, failed asserts), or its failure after timeout_s."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        with contextlib.suppress(httpx.HTTPError, AssertionError):
            return fn()
        time.sleep(0.3)
    return fn()


def two_workers(manager: int, without: int | None = None) -> list[int]:
    pids = worker_pids(manager)
    assert len(pids) == 2 and without not in pids, pids
    return pids


def test_two_workers_start_from_the_snapshot_and_a_killed_one_is_replaced(tmp_path):
    log = tmp_path / "lite.log"
    port = free_port()
    with open(log, "w") as out:
        lite = subprocess.Popen([str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir",
                                 str(tmp_path / "milvus.db"), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    serve = None
    try:
        wait_port(port, lite, log, 60)
        uri, snapshots = f"http://127.0.0.1:{port}", tmp_path / "snapshots"
        client = mi.connect(uri)
        vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
        info = mi.CollectionInfo("items_v1", "m", "1", Funnel(8, 100, (16,), 4), [8, 16], 10, None)
        mi.create_collection(client, info, DIM, "FLAT", 16, 40)
        mi.insert_rows(client, "items_v1", np.array([f"item-{i:04d}" for i in range(N)]), ["a"] * N, vectors, 8, 1000)
        mi.swap_alias(client, "items", "items_v1", expected=None)
        MemoryFunnelIndex(client, "items_v1", load_config(None, []).retrieval).write_snapshot(snapshots)
        client.close()

        http_port = free_port()
        base = f"http://127.0.0.1:{http_port}"
        serve = subprocess.Popen([sys.executable, "-m", "mrl.cli", "serve", "--milvus-uri", uri, "--port",
                                  str(http_port), "--no-model", "--workers", "2", "--query-log-dir",
                                  str(tmp_path / "q"), "--set", f"retrieval.snapshot_dir={snapshots}"],
                                 stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT,
                                 start_new_session=True)

        def search(i: int = 7) -> list[str]:
            r = httpx.post(f"{base}/search", json={"id": f"item-{i:04d}", "k": 3}, timeout=10)
            assert r.status_code == 200, r.text
            return [h["id"] for h in r.json()["results"]]

        assert wait_for(search)[0] == "item-0007"
        assert "from snapshot" in (tmp_path / "serve.log").read_text()  # each worker started from it
        workers = wait_for(lambda: two_workers(serve.pid))
        os.kill(workers[0], signal.SIGKILL)
        answered = [search(i)[0] for i in range(20)]  # the other worker answers meanwhile
        assert answered == [f"item-{i:04d}" for i in range(20)]
        replaced = wait_for(lambda: two_workers(serve.pid, without=workers[0]))
        assert workers[1] in replaced
        assert wait_for(search)[0] == "item-0007"
    finally:
        if serve is not None:
            stop(serve)
        stop(lite)

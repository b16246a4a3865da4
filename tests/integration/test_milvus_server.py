"""The Milvus server path against a real Milvus 2.3 standalone server (`milvus-server` from `pip install
milvus==2.3.5`, the dev extra), started in a temp dir on free ports: one vector field per collection, so `full`
is an ARRAY field, and a funnel search is still one round trip. Skipped only when the server is not installed or
does not come up."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mrl.errors import MRLError
from mrl.retrieval import ReferenceFunnelIndex
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel

pytestmark = pytest.mark.slow  # starts a Milvus 2.3 server (10-30 s)

START_TIMEOUT_S = 90  # measured ~10-30 s on 2 busy cores
N, FULL_DIM = 3000, 32
FUNNEL = Funnel(8, 200, (16, 32))  # d0=8 shortlist of 200, re-ranked at 16, then at the full 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def milvus_server_exe() -> str | None:
    sibling = Path(sys.executable).with_name("milvus-server")  # the venv's, when it is not on PATH
    return shutil.which("milvus-server") or (str(sibling) if sibling.exists() else None)


def wait_for_server(proc: subprocess.Popen, uri: str, port: int, log: Path):
    """A client once the proxy answers; pytest.skip if the server exits or is not up within START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return mi.connect(uri)
        except (OSError, MRLError):
            time.sleep(1.0)
    tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
    pytest.skip(f"milvus-server did not come up within {START_TIMEOUT_S} s (exit code {proc.poll()}): {tail}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGINT lets the `milvus-server` wrapper stop and reap its `milvus` child (SIGTERM, SIGKILL 1 s later);
    whatever of the process group is still there after a few seconds is killed hard."""
    proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=8)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def server():
    """(client, uri) of a fresh Milvus 2.3 server, stopped at the end whatever happened, in its own process group
    (the wrapper runs the `milvus` binary as a child)."""
    exe = milvus_server_exe()
    if exe is None:
        pytest.skip("milvus-server not installed (pip install milvus==2.3.5, in the dev extra)")
    data = Path(tempfile.mkdtemp(prefix="milvus-server-"))
    port = free_port()
    log = data / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([exe, "--data", str(data / "data"), "--proxy-port", str(port),
                                 "--etcd-port", str(free_port())], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        client = wait_for_server(proc, uri, port, log)
        yield client, uri
        client.close()
    finally:
        stop_server(proc)
        shutil.rmtree(data, ignore_errors=True)


def normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_collection(client, name: str, items: np.ndarray, labels: list[str], previous: str | None = None) -> None:
    info = mi.CollectionInfo(name, "test", name.rsplit("_v", 1)[1], FUNNEL, [8, 16, 32], 10, previous)
    mi.create_collection(client, info, FULL_DIM, "FLAT", 16, 100)  # FLAT: an exact shortlist, for parity
    mi.insert_rows(client, name, np.arange(len(items)), labels, items, FUNNEL.d0, 1000)


@pytest.fixture(scope="module")
def catalogue(server):
    """items_v1 on the server: N random normalized 32-dim items, ids "0".."N-1", one of 7 labels each."""
    client, _ = server
    items = normalized(np.random.default_rng(0).standard_normal((N, FULL_DIM)))
    labels = [f"label{i % 7}" for i in range(N)]
    make_collection(client, "items_v1", items, labels)
    assert mi.row_count(client, "items_v1") == N  # a Strong read: every row inserted is visible from here on
    return items, labels


def test_server_version_and_layout(server, catalogue):
    client, _ = server
    assert mi.server_version(client.get_server_version()) == (2, 3)
    assert mi.full_layout_of(client, "items_v1") == "array"  # 2.3 allows one vector field per collection
    with pytest.raises(MRLError, match=r"needs Milvus >= 2\.4"):
        mi.full_layout(client, 5000)  # over Milvus's 4096-element ARRAY limit


def test_funnel_search_matches_exact_in_memory_reference(server, catalogue):
    """Same neighbours, scores and labels as the exact reference, from one round trip for the whole batch."""
    client, _ = server
    items, labels = catalogue
    index = mi.MilvusFunnelIndex(client, "items_v1")
    reference = ReferenceFunnelIndex(items, [str(i) for i in range(N)], labels, FUNNEL)
    rng = np.random.default_rng(1)
    queries = np.concatenate([items[:10], normalized(rng.standard_normal((30, FULL_DIM)))])
    ours, timings = index.search(queries, 10)
    theirs, _ = reference.search(queries, 10)
    assert [[h["id"] for h in row] for row in ours] == [[h["id"] for h in row] for row in theirs]
    assert [[h["label"] for h in row] for row in ours] == [[h["label"] for h in row] for row in theirs]
    np.testing.assert_allclose([[h["score"] for h in row] for row in ours],
                               [[h["score"] for h in row] for row in theirs], atol=1e-5)
    assert [row[0]["id"] for row in ours[:10]] == [str(i) for i in range(10)]  # an item finds itself first
    assert set(timings) == {"shortlist_d8", "rerank_d16", "rerank_d32"}  # no separate fetch of `full`


def test_alias_vector_of_and_sample_id(server, catalogue):
    client, _ = server
    items, labels = catalogue
    client.create_alias(collection_name="items_v1", alias="items")
    assert mi.alias_target(client, "items") == "items_v1"
    index = mi.MilvusFunnelIndex(client, "items")  # through the alias, as the service opens it
    np.testing.assert_allclose(index.vector_of("42"), items[42], atol=1e-7)
    assert 0 <= int(index.sample_id()) < N
    with pytest.raises(MRLError, match="unknown item id 'nope'"):
        index.vector_of("nope")

    make_collection(client, "items_v2", items[:500], labels[:500], previous="items_v1")
    assert mi.row_count(client, "items_v2") == 500
    client.alter_alias(collection_name="items_v2", alias="items")
    assert mi.alias_target(client, "items") == "items_v2"
    assert mi.versioned_collections(client, "items") == ["items_v1", "items_v2"]
    moved = mi.MilvusFunnelIndex(client, "items")
    assert moved.info.previous == "items_v1"
    hits, _ = moved.search(items[499], 3)
    assert hits[0][0]["id"] == "499" and all(int(h["id"]) < 500 for h in hits[0])


def test_the_memory_backend_reads_a_server_collection(server, catalogue):
    """The memory backend over a server's collection (the ARRAY layout): every row read back, same neighbours."""
    from mrl.config import RetrievalConfig
    from mrl.retrieval.backends import open_index

    client, _ = server
    items, labels = catalogue
    served = open_index(client, "items_v1", RetrievalConfig(index_type="FLAT", rerank_dtype="float32"), "memory")
    assert len(served.ids) == N
    reference = ReferenceFunnelIndex(items, [str(i) for i in range(N)], labels, FUNNEL)
    ours, _ = served.search(items[:20], 10)
    theirs, _ = reference.search(items[:20], 10)
    assert [[h["id"] for h in row] for row in ours] == [[h["id"] for h in row] for row in theirs]

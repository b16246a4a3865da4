"""`mrl index retier` on real Milvus Lite, over a collection made directly (no model): it re-chooses the funnel on the
service's query log (or, with too few logged queries, on held-out rows), rebuilds the collection from its stored rows
as items_v<N>_t<n> and swaps the alias; rollback goes back; bad query logs and failures leave everything as it was;
the Searcher serves the new collection with the same ids, labels and thumbnails."""

import base64
import json

import numpy as np
import pytest
from helpers import invoke, ok, one_line_error

from mrl import drift
from mrl import retier as retier_mod
from mrl.config import load_config
from mrl.drift import Reference
from mrl.errors import MRLError
from mrl.retier import RETIER_PROPERTY, retier_index
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel
from mrl.search import Query, Searcher

pytestmark = pytest.mark.slow  # a Milvus Lite server per test (2-3 s each on 2 busy cores)

N, DIM, DIMS = 600, 16, [4, 8, 16]
SERVED = Funnel(4, 11, (16,), 4)  # a shortlist of 11 at 4 dims: far below the target recall on these vectors
SETS = ["retrieval.candidate_d0=[4, 8]", f"retrieval.candidate_k0=[60, {N}]", "retrieval.cascades=[[16]]",
        "retrieval.quantizations=[\"float32\", \"int8\"]", "retrieval.index_type=FLAT", "retrieval.max_queries=200",
        "retrieval.verify_queries=200", "retrieval.timed_queries=20", "retrieval.target_recall=0.95",
        "retrieval.insert_batch=250", "retrieval.serve_backend=memory",
        "retrieval.rerank_dtype=float32"]  # the verification searches as the choice measured
UNREACHABLE_MLFLOW = "http://127.0.0.1:9"  # the drift reference's MLflow copy fails at once, and nothing is written


def vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def served(tmp_path):
    """items_v1 as a promotion leaves it: rows with thumbnails, the funnel SERVED, behind the items alias, with a drift
    reference; and the cfg the tests retier with."""
    uri = str(tmp_path / "milvus.db")
    client = mi.connect(uri)
    catalogue = vectors(N, 0)
    info = mi.CollectionInfo("items_v1", "m", "1", SERVED, DIMS, 10, None, "sha-of-the-catalogue")
    mi.create_collection(client, info, DIM, "FLAT", 16, 40, {"thumbnail": "text"})
    ids = np.array([f"item-{i:03d}" for i in range(N)])
    thumbs = [base64.b64encode(f"png of {i}".encode()).decode() for i in ids]
    mi.insert_rows(client, info.name, ids, [f"class-{i % 3}" for i in range(N)], catalogue, SERVED.d0, 1000, None,
                   {"thumbnail": thumbs})
    mi.swap_alias(client, "items", info.name, expected=None)
    client.release_collection(info.name)  # as Milvus Lite reopens it after a restart
    cfg = load_config(None, [*SETS, f"drift.reference_dir={tmp_path / 'refs'}"])
    ref = Reference(catalogue[:100], 50, np.zeros(100, np.int64), ["c"], None, [4, 16], "mmd", 8, 25, {"d4": 0.1},
                    {"collection": "items_v1"})
    drift.save_reference(ref, drift.reference_path(cfg, "items_v1"))
    yield client, uri, cfg, catalogue
    client.close()


def write_log(directory, rows: np.ndarray, per_file: int = 100):
    """The service's query log: queries-<time>.npy files of up to per_file rows, oldest first."""
    directory.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(rows), per_file)):
        np.save(directory / f"queries-{1_796_000_000_000_000_000 + n * 60_000_000_000}.npy", rows[start:start + per_file])
    return directory


def live_queries(catalogue: np.ndarray, n: int) -> np.ndarray:
    """Queries near catalogue items, as a service's users might send."""
    x = catalogue[np.random.default_rng(1).choice(len(catalogue), n)] + 0.3 * vectors(n, 2)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def args(uri, cfg_dir, *more) -> list:
    return ["index", "retier", "--milvus-uri", uri, "--tracking-uri", UNREACHABLE_MLFLOW,
            *[a for s in [*SETS, f"drift.reference_dir={cfg_dir / 'refs'}"] for a in ("--set", s)], *more]


def state(client) -> tuple:
    return mi.alias_target(client, "items"), mi.versioned_collections(client, "items"), mi.lock_holder(client, "items")


def test_retier_on_the_query_log_swaps_in_a_new_collection_and_rollback_goes_back(served, tmp_path):
    client, uri, cfg, catalogue = served
    log_dir = write_log(tmp_path / "query_log", live_queries(catalogue, 150))
    client.close()  # the CLI opens the Milvus Lite file in this process too
    lines = ok(invoke(*args(uri, tmp_path, "--queries", log_dir, "--out", tmp_path / "retier.json")))
    client = mi.connect(uri)
    text = "\n".join(lines)
    assert f"queries: the 150 newest of 150 logged queries ({log_dir}, written 2026-11-30 " in text
    served_line = next(line for line in lines if line.startswith("served "))
    chosen_line = next(line for line in lines if line.startswith("chosen "))
    assert SERVED.name() in served_line and SERVED.name() not in chosen_line
    assert "alias items: items_v1 -> items_v1_t1 (600 rows, verified recall@10" in text
    assert "retier took " in lines[-1] and "read " in lines[-1] and "verify " in lines[-1]
    assert f"drift reference {tmp_path / 'refs' / 'items_v1_t1.npz'}, carried over from items_v1" in text
    assert "not logged to MLflow" in text  # its MLflow server is down: the local copy serves this machine
    record = json.loads((tmp_path / "retier.json").read_text())
    assert (record["collection"], record["previous"], record["rows"], record["swapped"]) == (
        "items_v1_t1", "items_v1", N, True)
    assert record["queries"]["source"] == "query_log" and record["queries"]["count"] == 150
    assert record["funnel"]["recall"] >= 0.95 > record["served_funnel"]["recall"]
    assert record["verify_recall"] >= 0.95
    assert set(record["seconds"]) == {"read", "choose", "build", "drift", "verify", "total"}

    # The same lineage, the funnel chosen, what it replaced, how it was retiered; the drift reference carried over.
    assert state(client) == ("items_v1_t1", ["items_v1", "items_v1_t1"], None)
    info = mi.CollectionInfo.read(client, "items_v1_t1")
    assert (info.model_name, info.model_version, info.data_sha256, info.previous, info.nesting_dims) == (
        "m", "1", "sha-of-the-catalogue", "items_v1", DIMS)
    assert info.funnel.name() == record["funnel"]["funnel"] != SERVED.name()
    how = json.loads(client.describe_collection("items_v1_t1")["properties"][RETIER_PROPERTY])
    assert how["from"] == "items_v1" and how["queries"] == "query_log" and how["query_count"] == 150
    carried = drift.load_reference(drift.reference_path(cfg, "items_v1_t1"))
    assert carried.meta["collection"] == "items_v1_t1" and carried.meta["retiered_from"] == "items_v1"
    assert np.array_equal(carried.embeddings, catalogue[:100]) and carried.thresholds == {"d4": 0.1}
    assert drift.reference_path(cfg, "items_v1").exists()  # the old one's, for a rollback

    client.close()
    assert ok(invoke("index", "rollback", "--milvus-uri", uri))[-1] == "alias items: items_v1_t1 -> items_v1"
    # A second retier never reuses a name (a replica may still serve items_v1_t1), and replaces what is served now.
    ok(invoke(*args(uri, tmp_path, "--queries", log_dir)))
    client = mi.connect(uri)
    assert state(client) == ("items_v1_t2", ["items_v1", "items_v1_t1", "items_v1_t2"], None)
    assert mi.CollectionInfo.read(client, "items_v1_t2").previous == "items_v1"
    client.close()


def test_too_small_a_log_falls_back_to_held_out_rows_and_says_so(served, tmp_path):
    client, uri, cfg, catalogue = served
    log_dir = write_log(tmp_path / "query_log", live_queries(catalogue, 30))
    result = retier_index(cfg, uri, UNREACHABLE_MLFLOW, log_dir, log=lambda _: None)
    assert result.queries.source == "held_out" and len(result.queries.vectors) == 120  # a fifth of 600 rows
    assert "120 held-out rows of the collection (the 30 newest of 30 logged queries" in result.queries.description
    assert "fewer than --min-queries 100" in result.queries.description
    assert len(set(result.queries.own_ids)) == 120 and len(result.queries.searched) == N - 120  # taken out
    assert result.swapped and mi.alias_target(client, "items") == "items_v1_t1"
    # --min-queries lowers the bar: the 30 logged queries are used.
    client.alter_alias(collection_name="items_v1", alias="items")
    lowered = retier_index(cfg, uri, UNREACHABLE_MLFLOW, log_dir, min_queries=30, log=lambda _: None)
    assert lowered.queries.source == "query_log" and len(lowered.queries.vectors) == 30


def test_when_the_served_funnel_still_wins_nothing_is_rebuilt(served, tmp_path):
    client, uri, _, _ = served
    exact = load_config(None, [*SETS, "retrieval.candidate_d0=[]", f"drift.reference_dir={tmp_path / 'refs'}"])
    info = mi.CollectionInfo("items_v2", "m", "2", Funnel(DIM, 10), DIMS, 10, "items_v1")
    mi.create_collection(client, info, DIM, "FLAT", 16, 40)
    mi.insert_rows(client, info.name, np.array([f"x{i}" for i in range(50)]), ["c"] * 50, vectors(50, 3), DIM, 100)
    mi.swap_alias(client, "items", info.name, expected="items_v1")
    result = retier_index(exact, uri, UNREACHABLE_MLFLOW, None, log=lambda _: None)  # no query log: held-out rows
    assert not result.swapped and result.chosen.funnel == result.served.funnel == Funnel(DIM, 10)
    assert "still the fastest" in result.summary("items", 10)[-2]
    assert state(client) == ("items_v2", ["items_v1", "items_v2"], None)


@pytest.mark.parametrize("bad", ["wrong dim", "NaN", "junk file", "1-D", "missing dir", "lock held"])
def test_a_bad_query_log_is_one_line_and_changes_nothing(served, tmp_path, bad):
    client, uri, cfg, catalogue = served
    log_dir = write_log(tmp_path / "query_log", live_queries(catalogue, 150))
    if bad == "wrong dim":
        np.save(log_dir / "queries-2000.npy", vectors(5, 4)[:, :8])
        says = ["queries-2000.npy: expected query embeddings of shape (rows, 16)", "got (5, 8)"]
    elif bad == "NaN":
        np.save(log_dir / "queries-2000.npy", np.full((3, DIM), np.nan, np.float32))
        says = ["queries-2000.npy: holds NaN or infinite values"]
    elif bad == "junk file":
        (log_dir / "queries-2000.npy").write_bytes(b"not an array")
        says = ["queries-2000.npy: not a readable .npy array"]
    elif bad == "1-D":
        np.save(log_dir / "queries-2000.npy", np.zeros(DIM, np.float32))
        says = ["queries-2000.npy: expected query embeddings of shape (rows, 16)"]
    elif bad == "missing dir":
        log_dir = tmp_path / "no-such-log"
        says = ["no-such-log: query log directory not found"]
    else:
        mi.acquire_promotion_lock(client, "items", "items_v9")
        says = ["another promotion (items_v9 on"]
    before = state(client)
    client.close()
    one_line_error(invoke(*args(uri, tmp_path, "--queries", log_dir)), *says)
    client = mi.connect(uri)
    assert state(client) == before and not drift.reference_path(cfg, "items_v1_t1").exists()
    client.close()


@pytest.mark.parametrize("step", ["insert_rows", "verify_collection", "swap_alias"])
def test_a_failure_before_the_swap_drops_the_partial_collection(served, tmp_path, monkeypatch, step):
    client, uri, cfg, catalogue = served
    log_dir = write_log(tmp_path / "query_log", live_queries(catalogue, 150))

    def boom(*args, **kwargs):
        raise RuntimeError(f"injected failure in {step}")

    monkeypatch.setattr(retier_mod if step == "verify_collection" else mi, step, boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        retier_index(cfg, uri, UNREACHABLE_MLFLOW, log_dir, log=lambda _: None)
    assert state(client) == ("items_v1", ["items_v1"], None)
    assert mi.row_count(client, "items_v1") == N and not drift.reference_path(cfg, "items_v1_t1").exists()
    assert drift.reference_path(cfg, "items_v1").exists()


def test_a_moved_alias_is_refused(served, tmp_path, monkeypatch):
    client, uri, cfg, catalogue = served
    log_dir = write_log(tmp_path / "query_log", live_queries(catalogue, 150))
    real_insert = mi.insert_rows

    def insert_then_move(*args, **kwargs):  # a rollback that ignored the lock, while the rows go in
        real_insert(*args, **kwargs)
        client.create_collection("items_v7", dimension=4)
        client.alter_alias(collection_name="items_v7", alias="items")

    monkeypatch.setattr(mi, "insert_rows", insert_then_move)
    with pytest.raises(MRLError, match="now points at items_v7, not items_v1"):
        retier_index(cfg, uri, UNREACHABLE_MLFLOW, log_dir, log=lambda _: None)
    assert mi.alias_target(client, "items") == "items_v7" and "items_v1_t1" not in client.list_collections()


def test_the_searcher_serves_the_new_collection_with_the_same_ids_labels_and_thumbnails(served, tmp_path):
    client, uri, cfg, catalogue = served
    log_dir = write_log(tmp_path / "query_log", live_queries(catalogue, 150))
    retier_index(cfg, uri, UNREACHABLE_MLFLOW, log_dir, log=lambda _: None)
    answers = {}
    for backend in ("memory", "milvus"):
        searcher = Searcher.open(load_config(None, [*SETS, f"retrieval.serve_backend={backend}"]), uri,
                                 load_model=False, client=client)
        assert searcher.collections() == ("items_v1_t1", None)
        hits = searcher.search(Query(id="item-007"), k=5).results
        assert hits[0]["id"] == "item-007" and all(h["label"] == f"class-{int(h['id'][5:]) % 3}" for h in hits)
        assert searcher.item_thumbnail("item-042") == b"png of item-042"
        answers[backend] = [h["id"] for h in hits]
    assert answers["memory"] == answers["milvus"]
    memory = Searcher.open(cfg, uri, load_model=False, client=client).items
    assert sorted(memory.ids) == [f"item-{i:03d}" for i in range(N)]
    assert dict(zip(memory.ids, memory.labels)) == {f"item-{i:03d}": f"class-{i % 3}" for i in range(N)}
    rows = [memory.ids.index(f"item-{i:03d}") for i in range(N)]
    assert np.allclose(memory.full[rows], catalogue, atol=1e-6)

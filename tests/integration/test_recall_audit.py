"""The live recall audit with real parts: collections built directly in Milvus Lite (random unit vectors, no model), the
service through FastAPI's TestClient with retrieval.audit_fraction 1, and the real `mrl drift` check of its query log.

A deliberately bad funnel (a 12-item shortlist on a 4-dim prefix, for k = 10) must be caught on /metrics and by
`mrl drift` (exit 3, the recall test failed); a good one (a shortlist of every item) reports recall 1.0 and no drift.
"""

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mrl.cli import app as cli
from mrl.config import load_config
from mrl.drift.calibration import build_reference
from mrl.drift.reference import save_reference
from mrl.drift.results import EXIT_DRIFT
from mrl.retrieval import exact as exact_module
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.funnel import Funnel, exact_search
from mrl.service import create_app

pytestmark = pytest.mark.slow  # Milvus Lite, and Evidently's report in each drift check

N, DIM, DIMS, K, QUERIES = 300, 16, [4, 8, 16], 10, 100
FUNNELS = {"items_v1": Funnel(4, 12, (16,), 4),  # bad: k0 barely above k, on a 4-dim prefix of random vectors
           "items_v2": Funnel(4, N, (16,), 4)}  # good: the shortlist is every item
DRIFT = ["drift.min_window=30", "drift.calibration_draws=60"]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Both collections over the same 300 random unit vectors, each with its drift reference; the alias moved by
    `serve`."""
    tmp = tmp_path_factory.mktemp("audit")
    vectors = unit(np.random.default_rng(0).standard_normal((N, DIM)))
    client = mi.connect(str(tmp / "milvus.db"))
    ids, labels = np.array([f"item-{i:03d}" for i in range(N)]), [f"class-{i % 3}" for i in range(N)]
    cfg = load_config(None, DRIFT)
    for name, funnel in FUNNELS.items():
        info = mi.CollectionInfo(name, "m", name[-1], funnel, DIMS, K, None)
        mi.create_collection(client, info, DIM, "FLAT", 16, 40)
        mi.insert_rows(client, name, ids, labels, vectors, funnel.d0, 1000)
        ref = build_reference(vectors, np.arange(N) % 3, ["class-0", "class-1", "class-2"], [4, 16], cfg.drift,
                              {"collection": name, "model_name": "m", "model_version": name[-1]}, log=lambda _: None)
        save_reference(ref, tmp / "refs" / f"{name}.npz")
    client.create_alias(collection_name="items_v1", alias="items")
    yield {"client": client, "uri": str(tmp / "milvus.db"), "vectors": vectors, "refs": tmp / "refs"}
    client.close()


def serve(catalogue, collection: str, backend: str, qlog):
    catalogue["client"].alter_alias(collection_name=collection, alias="items")
    cfg = load_config(None, ["retrieval.audit_fraction=1", f"retrieval.serve_backend={backend}",
                             "retrieval.index_type=FLAT", "retrieval.rerank_dtype=float32"])
    return TestClient(create_app(cfg, catalogue["uri"], load_model=False, client=catalogue["client"],
                                 query_log_dir=qlog, reload_interval_s=0))


def search_all(http, queries: np.ndarray) -> list[list[str]]:
    got = []
    for q in queries:
        response = http.post("/search", json={"vector": q.tolist(), "k": K})
        assert response.status_code == 200, response.text
        got.append([r["id"] for r in response.json()["results"]])
    return got


def wait_for_audits(http, n: int, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while (audit := http.get("/readyz").json()["audit"])["audited"] < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return audit


def metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def drift(catalogue, qlog, collection, out):
    return CliRunner().invoke(cli, ["drift", "--current", str(qlog), "--reference",
                                    str(catalogue["refs"] / f"{collection}.npz"), "--out", str(out / "report"),
                                    "--workspace", str(out / "ws"), *[a for s in DRIFT for a in ("--set", s)]])


@pytest.mark.parametrize("backend", ["memory", "milvus"])
def test_a_bad_funnel_is_caught_on_metrics_and_by_mrl_drift(catalogue, backend, tmp_path):
    queries = unit(np.random.default_rng(1).standard_normal((QUERIES, DIM)))
    with serve(catalogue, "items_v1", backend, tmp_path / "qlog") as http:
        got = search_all(http, queries)
        audit = wait_for_audits(http, QUERIES)
        text = http.get("/metrics").text
    truth = exact_search(catalogue["vectors"], queries, K).indices
    true_recall = np.mean([len({f"item-{i:03d}" for i in t} & set(g)) / K for t, g in zip(truth, got)])
    assert true_recall < 0.6  # the funnel is as bad as meant
    assert audit["audited"] == QUERIES and audit["dropped"] == 0 and audit["collection"] == "items_v1"
    assert metric(text, "mrl_funnel_recall_at_k") == pytest.approx(true_recall, abs=0.005)  # the audit measured it
    assert metric(text, "mrl_funnel_audited_total") == QUERIES and metric(text, "mrl_funnel_audit_dropped_total") == 0
    rows = [json.loads(line) for f in sorted((tmp_path / "qlog").glob("audit-*.jsonl"))
            for line in f.read_text().splitlines()]
    assert len(rows) == QUERIES and {r["funnel"] for r in rows} == {"4@12 -> 16"} and {r["k"] for r in rows} == {K}

    result = drift(catalogue, tmp_path / "qlog", "items_v1", tmp_path)
    assert result.exit_code == EXIT_DRIFT, result.output
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    recall = {t["name"]: t for t in summary["tests"]}["funnel_recall@10"]
    assert recall["drifted"] and recall["score"] == pytest.approx(true_recall, abs=0.005) and recall["threshold"] == 0.99
    assert not any(t["drifted"] for t in summary["tests"] if t["name"] != "funnel_recall@10")  # same distribution
    assert summary["audit"]["by_k"]["10"]["queries"] == QUERIES and summary["audit"]["collection"] == "items_v1"
    assert "funnel_recall@10" in result.output and "drift.on_drift is none" in result.output  # the action ran
    assert "Funnel recall" in (tmp_path / "report" / "report.html").read_text()


def test_a_good_funnel_reports_recall_1_and_no_drift_with_a_dashboard_panel(catalogue, tmp_path):
    from evidently.ui.workspace import Workspace

    from mrl.drift.dashboard import CalibratedThreshold, FunnelRecall, panel_id

    queries = unit(np.random.default_rng(2).standard_normal((QUERIES, DIM)))
    with serve(catalogue, "items_v2", "memory", tmp_path / "qlog") as http:
        search_all(http, queries)
        wait_for_audits(http, QUERIES)
        text = http.get("/metrics").text
    assert metric(text, "mrl_funnel_recall_at_k") == 1.0
    result = drift(catalogue, tmp_path / "qlog", "items_v2", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    recall = {t["name"]: t for t in summary["tests"]}["funnel_recall@10"]
    assert recall["score"] == 1.0 and not recall["drifted"]

    ws = Workspace(str(tmp_path / "ws"))
    [project] = ws.search_project(load_config(None, []).drift.project)
    panel = {p.id: p for p in project.dashboard.model().panels}[panel_id(project.id, "funnel_recall@10")]
    score, target = panel.values
    assert score.metric == FunnelRecall.__get_type__() and target.metric == CalibratedThreshold.__get_type__()
    [snapshot] = [ws.get_run(project.id, s) for s in ws.list_runs(project.id)]
    values = {(r.metric_value_location.metric.params["type"], r.metric_value_location.metric.params.get("test_name")):
              r.value for r in snapshot.metric_results.values()}
    assert values[(score.metric, "funnel_recall@10")] == 1.0 and values[(target.metric, "funnel_recall@10")] == 0.99


def test_responses_do_not_wait_for_the_audit_and_id_searches_are_not_audited(catalogue, tmp_path, monkeypatch):
    def slow_exact(index):
        def search(query, k):
            time.sleep(1.0)
            return index.exact(query, k)
        return search

    monkeypatch.setattr(exact_module, "exact_search_for", slow_exact)
    vectors = catalogue["vectors"]
    with serve(catalogue, "items_v1", "memory", tmp_path / "qlog") as http:
        for i in range(3):
            assert http.post("/search", json={"id": f"item-{i:03d}", "k": K}).status_code == 200
        explorer = http.post("/search", json={"vector": vectors[5].tolist(), "k": K, "funnel": {"d0": 8, "k0": 50}})
        assert explorer.status_code == 200
        started = time.perf_counter()
        assert http.post("/search", json={"vector": vectors[0].tolist(), "k": K}).status_code == 200
        assert time.perf_counter() - started < 0.5  # its audit takes 1 s, on the audit thread
        first = http.get("/readyz").json()["audit"]  # queued (or taken by the worker), not done
        assert first["fraction"] == 1.0 and first["audited"] == first["dropped"] == 0 and first["recall_at_k"] is None
        audit = wait_for_audits(http, 1)
        time.sleep(0.3)
        assert http.get("/readyz").json()["audit"]["audited"] == audit["audited"] == 1


def test_the_milvus_exact_search_by_milvus_and_by_scan_equal_exact_search(catalogue):
    """Both ways of the milvus backend's exact search (a Milvus COSINE search of `full`, as on a server; the stored
    vectors read once and scanned, as on Milvus Lite) find what in-memory exact search finds."""
    queries = unit(np.random.default_rng(3).standard_normal((5, DIM)))
    truth = exact_search(catalogue["vectors"], queries, K).indices
    by_scan = exact_module.MilvusExactSearch(catalogue["client"], "items_v1")
    by_milvus = exact_module.MilvusExactSearch(catalogue["client"], "items_v1")
    assert by_scan.way == "table"  # Milvus Lite: its brute-force search costs ~50x a scan (bench/audit.py)
    by_milvus.way = "milvus"
    for q, t in zip(queries, truth):
        want = [f"item-{i:03d}" for i in t]
        assert [h["id"] for h in by_milvus(q * 3.0, K)[0]] == want  # any query length: cosine
        assert [h["id"] for h in by_scan(q, K)[0]] == want


def test_a_recall_drift_can_retier_the_funnel_instead_of_retraining(catalogue, tmp_path, monkeypatch):
    """drift.on_low_recall: retier: the recall test alone failed, so `mrl drift` re-chooses the funnel on the window's
    queries (`mrl index retier`) and the alias moves to a rebuilt collection; no model runs."""
    monkeypatch.chdir(tmp_path)  # retier logs the carried drift reference to ./mlflow.db
    queries = unit(np.random.default_rng(3).standard_normal((QUERIES, DIM)))
    with serve(catalogue, "items_v1", "memory", tmp_path / "qlog") as http:
        search_all(http, queries)
        wait_for_audits(http, QUERIES)
    result = CliRunner().invoke(cli, [
        "drift", "--current", str(tmp_path / "qlog"), "--reference", str(catalogue["refs"] / "items_v1.npz"),
        "--out", str(tmp_path / "report"), "--no-workspace", "--milvus-uri", catalogue["uri"],
        *[a for s in [*DRIFT, "drift.on_low_recall=retier", f"drift.reference_dir={catalogue['refs']}",
                      "retrieval.serve_backend=memory", "retrieval.index_type=FLAT", "retrieval.k=10",
                      "retrieval.candidate_d0=[4, 8]", "retrieval.cascades=[[16]]"] for a in ("--set", s)]])
    assert result.exit_code == EXIT_DRIFT, result.output
    assert "funnel recall below target: retiered items -> items_v1_t1" in result.output
    assert mi.alias_target(catalogue["client"], "items") == "items_v1_t1"
    assert mi.CollectionInfo.read(catalogue["client"], "items_v1_t1").funnel != FUNNELS["items_v1"]

"""Drift checks end to end: a tiny trained model promoted to Milvus Lite (which saves the drift reference),
then `mrl drift` on unchanged and shifted windows, with real Evidently reports and workspace."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import mlflow
import numpy as np
import pytest
from helpers import synthetic_images, write_fashion_mnist
from scipy import ndimage
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import IngestConfig, load_config
from mrl.data.artifact import Dataset, load_dataset, save_dataset
from mrl.drift.calibration import build_reference
from mrl.drift.check import check_drift
from mrl.drift.lookups import served_reference
from mrl.drift.monitor import monitor
from mrl.drift.reference import Reference, load_reference
from mrl.drift.results import EXIT_DRIFT, DriftResult
from mrl.drift.scoring import score_window
from mrl.errors import MRLError
from mrl.ingest import ingest
from mrl.promote import embed_with, promote_index
from mrl.retrain import retrain
from mrl.retrieval.lifecycle import rollback_index

pytestmark = pytest.mark.slow  # two promotions of 1,200 items, each calibrating a drift reference

PARAMS = ["model.nesting_dims=[4, 8, 16]", "model.embedding_dim=16", "model.cnn_widths=[8, 16, 16]",
          "train.batch_size=32", "train.epochs=2", "evaluate.recall_ks=[1]", "evaluate.probe_epochs=10",
          "retrieval.candidate_d0=[4, 8]", "retrieval.candidate_k0=[20, 60]", "retrieval.cascades=[[16]]",
          "retrieval.max_queries=60", "retrieval.verify_queries=60", "retrieval.target_recall=0.9",
          "retrieval.insert_batch=500", "retrieval.index_type=FLAT",
          "drift.window_size=150", "drift.min_window=30", "drift.reference_size=300", "drift.calibration_pool=700",
          "drift.calibration_draws=200"]
WINDOW = 150


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory):
    """The shared tiny models (seeds 0, 1) registered as v1 and v2 in this module's store; a catalogue of 1,200 items
    they never saw indexed with v1 (reference saved), then with v2 over it."""
    tmp = tmp_path_factory.mktemp("drift")
    params = [*PARAMS, f"drift.reference_dir={tmp / 'refs'}", f"drift.workspace={tmp / 'workspace'}"]
    (tmp / "params.yaml").write_text("\n".join(["drift:"] + [f"  {p.split('.', 1)[1].replace('=', ': ', 1)}"
                                                            for p in params if p.startswith("drift.")]) + "\n")
    data = ingest("fashion_mnist", write_fashion_mnist(tmp / "raw", 900, 300), tmp / "ds.npz", IngestConfig()).path
    milvus = str(tmp / "milvus.db")
    cfg = load_config(None, params)
    uri = tiny_models.register(tmp, seeds=[0, 1])["uri"]
    for version in ("1", "2"):
        mlflow.MlflowClient(uri).set_registered_model_alias(cfg.registry.model_name, "champion", version)
        promote_index(cfg, data, uri, milvus, log=lambda _: None)
    return {"tmp": tmp, "cfg": cfg, "uri": uri, "milvus": milvus, "data": data, "params": params}


def fresh_images(n: int, seed: int, transform=None, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """New draws from the catalogue's generator (never indexed), optionally transformed or class-restricted."""
    images, labels = synthetic_images(4 * n, seed)
    if classes is not None:
        keep = np.isin(labels, classes)
        images, labels = images[keep], labels[keep]
    images, labels = images[:n], labels[:n]
    if transform is not None:
        images = transform(images)
    return images[:, None], labels


def served(env) -> Reference:
    return load_reference(served_reference(env["cfg"], env["milvus"]))


def window(env, images: np.ndarray) -> np.ndarray:
    return embed_with(served(env).meta["model_uri"], images, 256, "window")


def verdict(env, emb, labels=None, ref=None) -> DriftResult:
    result, _ = check_drift(ref or served(env), emb, labels, env["cfg"].drift, log=lambda _: None)
    return result


def test_promotion_saves_a_calibrated_reference_per_collection(env):
    ref = served(env)
    assert ref.meta["collection"] == "items_v2" and ref.meta["model_version"] == "2"
    assert (env["tmp"] / "refs" / "items_v1.npz").exists()  # kept: the previous collection, for rollback
    assert ref.prefixes == sorted(ref.prefixes) and set(ref.prefixes) <= {4, 8, 16}
    assert ref.window_size == WINDOW and ref.compare_rows == 300
    assert set(ref.thresholds) == {f"d{d}" for d in ref.prefixes} | {"class_share/labels", "class_share/predicted"}
    assert all(t > 0 for k, t in ref.thresholds.items() if k.startswith("d"))


def test_unchanged_windows_pass(env):
    alarms = [verdict(env, window(env, fresh_images(WINDOW, 100 + i)[0])).drifted for i in range(8)]
    assert sum(alarms) <= 1, alarms


SHIFTS = {
    "darker": lambda x: (x * 0.5).astype(np.uint8),
    "lower contrast": lambda x: (x.mean() + (x - x.mean()) * 0.5).astype(np.uint8),
    "rotated": lambda x: np.stack([ndimage.rotate(i, 90, reshape=False, order=1) for i in x]),
}


@pytest.mark.parametrize("shift", list(SHIFTS))
def test_image_shifts_are_detected(env, shift):
    emb = window(env, fresh_images(WINDOW, 200, SHIFTS[shift])[0])
    assert verdict(env, emb).drifted


def test_class_prior_shift_is_detected_by_the_class_share_test(env):
    images, labels = fresh_images(WINDOW, 300, classes=[0, 1, 2])
    emb = window(env, images)
    result = verdict(env, emb, np.array(served(env).class_names)[labels])
    assert result.drifted and result.class_source == "labels"
    assert next(t for t in result.tests if t.name == "class_share").drifted


def test_unseen_class_is_detected(env):
    """A reference built without class 9; windows where class 9 is a fifth of the items alarm, ones without don't."""
    ds = load_dataset(env["data"])
    ref = served(env)
    emb = embed_with(ref.meta["model_uri"], ds.x, 256, "catalogue")
    seen = ds.labels != 9
    ref9 = build_reference(emb[seen], ds.labels[seen], [str(c) for c in ds.classes], ref.prefixes,
                           env["cfg"].drift, ref.meta, log=lambda _: None)
    images, labels = fresh_images(4 * WINDOW, 400)
    new = window(env, images)
    without = new[labels != 9][:WINDOW]
    mixed = np.concatenate([without[: WINDOW - 30], new[labels == 9][:30]])
    assert not verdict(env, without, ref=ref9).drifted
    assert verdict(env, mixed, ref=ref9).drifted


def test_report_scores_are_the_calibrated_scores(env):
    """The Evidently report computes the same numbers calibration and the bench compute without it."""
    ref = served(env)
    emb = window(env, fresh_images(WINDOW, 500)[0])
    result, _ = check_drift(ref, emb, None, env["cfg"].drift, log=lambda _: None)
    direct = score_window(ref, emb)
    for t in result.tests:
        if t.name in direct:
            assert t.score == pytest.approx(direct[t.name], rel=1e-6, abs=1e-9)


def test_rollback_checks_against_the_older_collections_reference(env, tmp_path):
    rollback_index(env["cfg"], env["milvus"])
    try:
        assert served(env).meta["collection"] == "items_v1"
    finally:
        from mrl.retrieval import milvus_index as mi

        client = mi.connect(env["milvus"])
        client.alter_alias(collection_name="items_v2", alias="items")
        client.close()


def test_a_reference_missing_here_is_fetched_from_the_model_run(env, tmp_path):
    """A check on another machine (a CronJob pod, a CI runner) gets the reference promotion logged to MLflow."""
    local = env["tmp"] / "refs" / "items_v2.npz"
    kept = local.rename(tmp_path / "kept.npz")
    try:
        path = served_reference(env["cfg"], env["milvus"], env["uri"], log=lambda _: None)
        assert path == local and load_reference(path).thresholds == load_reference(kept).thresholds
    finally:
        kept.replace(local)


def run_cli(env, *args):
    return CliRunner().invoke(app, ["drift", "--params", str(env["tmp"] / "params.yaml"), "--milvus-uri", env["milvus"],
                                    "--tracking-uri", env["uri"], *args])


def test_cli_writes_report_summary_and_workspace_and_exits_by_verdict(env, tmp_path):
    ok, bad = tmp_path / "ok", tmp_path / "shifted"
    save_window(ok, window(env, fresh_images(WINDOW, 600)[0]))
    save_window(bad, window(env, fresh_images(WINDOW, 601, SHIFTS["darker"])[0]))

    first = run_cli(env, "--current", str(ok), "--out", str(tmp_path / "r1"))
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["drifted"] is False and summary["compared_rows"] == WINDOW
    assert [t["name"] for t in summary["tests"]][-1] == "class_share" and summary["class_source"] == "predicted"
    html = (tmp_path / "r1" / "report.html").read_text()
    assert "Drift in embeddings" in html

    second = run_cli(env, "--current", str(bad), "--out", str(tmp_path / "r2"))
    assert second.exit_code == EXIT_DRIFT, second.output
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["drifted"] is True

    from evidently.ui.workspace import Workspace

    ws = Workspace(str(env["tmp"] / "workspace"))
    project = ws.search_project(env["cfg"].drift.project)[0]
    assert len(ws.list_runs(project.id)) >= 2


def plotted(snapshot, series) -> float:
    """The snapshot's one value a dashboard series selects, as the UI selects it (labels match params as strings)."""
    found = [r.value for r in snapshot.metric_results.values()
             if r.metric_value_location.metric.params["type"] == series.metric
             and all(str(r.metric_value_location.metric.params.get(k)) == v for k, v in series.metric_labels.items())]
    assert len(found) == 1, (series, found)
    return found[0]


def test_workspace_gets_one_drift_dashboard_and_tagged_snapshots(env, tmp_path):
    """Two real checks into one workspace: the panels exist once, plot metrics the snapshots hold (the
    thresholds among them), the snapshots carry their tags, and report.html states what was decided on what."""
    from evidently.sdk.panels import text_panel
    from evidently.ui.workspace import Workspace

    from mrl.drift.dashboard import TAB, CalibratedThreshold, panel_id

    ws_dir, results = tmp_path / "ws", []
    for i, shift in enumerate([None, SHIFTS["darker"]]):
        save_window(tmp_path / f"w{i}", window(env, fresh_images(WINDOW, 600 + i, shift)[0]))
        results.append(monitor(env["cfg"], tmp_path / f"w{i}", tmp_path / f"r{i}", workspace=ws_dir,
                               milvus_uri=env["milvus"], tracking_uri=env["uri"], log=lambda _: None))
        if i == 0:  # someone's own panel: the next check must leave it alone
            project = Workspace(str(ws_dir)).search_project(env["cfg"].drift.project)[0]
            project.dashboard.add_panel(text_panel("team notes"), tab="Notes")
    assert [r.drifted for r in results] == [False, True]

    ws = Workspace(str(ws_dir))
    [project] = ws.search_project(env["cfg"].drift.project)
    dashboard = project.dashboard.model()
    [tab] = [t for t in dashboard.tabs if t.title == TAB]
    panels = {p.id: p for p in dashboard.panels}
    assert len(panels) == len(dashboard.panels) and "team notes" in [p.title for p in dashboard.panels]
    assert len(tab.panels) == len(set(tab.panels)) == 1 + len(results[0].tests)  # a guide, one per test
    assert len({panels[p].title for p in tab.panels}) == len(tab.panels)

    snapshots = [ws.get_run(project.id, sid) for sid in ws.list_runs(project.id)]
    by_verdict = {s.metadata["verdict"]: s for s in snapshots}
    assert len(snapshots) == 2 and set(by_verdict) == {"no drift", "drift"}
    model = f"{env['cfg'].registry.model_name} v2"
    for result in results:
        verdict = "drift" if result.drifted else "no drift"
        snap = by_verdict[verdict]
        assert {"items_v2", "model-v2", verdict.replace(" ", "-")} <= set(snap.tags)
        assert snap.metadata["model_version"] == "2" and snap.metadata["collection"] == "items_v2"
        for t in result.tests:
            score, threshold = panels[panel_id(project.id, t.name)].values
            assert threshold.metric == CalibratedThreshold.__get_type__()
            assert plotted(snap, score) == pytest.approx(t.score)
            assert plotted(snap, threshold) == pytest.approx(t.threshold)

        html = Path(result.report_html).read_text()
        assert f"Embedding drift check: {'DRIFT (' if result.drifted else 'no drift'}" in html and model in html
        assert f"current {WINDOW} rows compared" in html and "reference 300 rows" in html
        assert all(f"{t.threshold:.4g}" in html for t in result.tests)
        assert "chi-square test p-value" in html and "maximum mean discrepancy" in html


def test_cli_dataset_window_is_embedded_with_the_reference_model(env, tmp_path):
    images, labels = fresh_images(WINDOW, 700)
    ds = Dataset("images", images, np.array([f"n{i}" for i in range(WINDOW)]), labels.astype(np.int64),
                 np.array(["test"] * WINDOW), np.array(served(env).class_names))
    save_dataset(ds, tmp_path / "batch.npz")
    out = run_cli(env, "--current", str(tmp_path / "batch.npz"), "--split", "test", "--out", str(tmp_path / "r"),
                  "--no-workspace")
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["class_source"] == "labels"


def save_window(directory, emb):
    directory.mkdir(parents=True)
    np.save(directory / "queries-1.npy", emb)


@pytest.mark.parametrize("case, message", [
    ("empty", "the window is empty"),
    ("dims", "embeddings have 12 dims, the reference has 16"),
    ("nan", "contain NaN or infinite values"),
    ("small", "fewer than drift.min_window"),
    ("no-reference", "drift reference not found"),
    ("not-an-array", "not a .npy array"),
])
def test_bad_input_is_an_error_never_drift(env, tmp_path, case, message):
    current, extra = tmp_path / "window", []
    current.mkdir()
    good = window(env, fresh_images(WINDOW, 800)[0])
    if case == "dims":
        np.save(current / "queries-1.npy", good[:, :12])
    elif case == "nan":
        good[3, 5] = np.nan
        np.save(current / "queries-1.npy", good)
    elif case == "small":
        np.save(current / "queries-1.npy", good[:10])
    elif case == "no-reference":
        np.save(current / "queries-1.npy", good)
        extra = ["--reference", str(tmp_path / "missing.npz")]
    elif case == "not-an-array":
        (current / "queries-1.npy").write_text("not numpy")
    out = run_cli(env, "--current", str(current), "--out", str(tmp_path / "report"), *extra)
    assert out.exit_code == 2, out.output
    assert message in out.output and out.output.count("\n") == 1
    assert not (tmp_path / "report").exists()


class _Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Recorder.requests.append((self.path, self.headers["Authorization"], body))
        self.send_response(204 if "ok" in self.path else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_github_dispatch_action(env, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}"
    try:
        cfg = load_config(None, [*env["params"], f"drift.github_api_url={api}", "drift.github_repository=acme/ok"])
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        with pytest.raises(MRLError, match="GITHUB_TOKEN"):
            retrain(cfg, "github", "")
        monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
        assert "sent to acme/ok" in retrain(cfg, "github", "", payload={"tests": ["d8"]})
        path, auth, body = _Recorder.requests[-1]
        assert path == "/repos/acme/ok/dispatches" and auth == "Bearer t0ken"
        assert body == {"event_type": "mrl-drift", "client_payload": {"tests": ["d8"]}}
        missing = load_config(None, [*env["params"], f"drift.github_api_url={api}", "drift.github_repository=acme/gone"])
        with pytest.raises(MRLError, match="answered 404"):
            retrain(missing, "github", "")
    finally:
        server.shutdown()


def test_drift_with_a_failing_action_exits_4(env, tmp_path, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    bad = tmp_path / "shifted"
    save_window(bad, window(env, fresh_images(WINDOW, 900, SHIFTS["darker"])[0]))
    out = run_cli(env, "--current", str(bad), "--out", str(tmp_path / "r"), "--no-workspace", "--set", "drift.on_drift=kfp")
    assert out.exit_code == 4, out.output
    assert "retrain action failed" in out.output

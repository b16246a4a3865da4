"""The whole training pipeline on kfp.local (SubprocessRunner, no venv) on a few hundred images."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import SMALL_PARAMS, small_params
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import parse_params
from mrl.registry import aliases
from mrl.retrieval import milvus_index as mi
from mrl.video.scenes import load_segments
from mrl.video.synth import generate_corpus
from pipelines.local import latest_local_output
from pipelines.run import run_drift_local

pytestmark = pytest.mark.slow  # every step a subprocess on kfp.local


def test_pipeline_trains_evaluates_registers_and_promotes(raw_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "kfp"
    milvus = str(tmp_path / "milvus.db")
    params = tmp_path / "params.yaml"
    # Three catalogue shards: promotion embeds and inserts them in a ParallelFor, then verifies and swaps once.
    params.write_text(small_params(raw_dir, retrieval=SMALL_PARAMS["retrieval"] | {"shards": 3}))
    # `mrl pipeline run` as `make demo` runs it, in a process of its own: its summary opens the Milvus Lite file, whose
    # lock would stay with this process and keep the drift pipeline's steps below out.
    done = subprocess.run([str(Path(sys.executable).with_name("mrl")), "pipeline", "run", "--params", str(params),
                           "--tracking-uri", uri, "--milvus-uri", milvus, "--pipeline-root", str(root)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in ("per-dim evaluation (test queries vs train database):", "  fashion-mnist-mrl@champion: v1",
                 "\nindex: alias items -> items_v1, funnel ", "\nexample search, the 5 nearest items to ",
                 "\ndrift check: held-out split vs the reference of items_v1",
                 f"MLflow UI:      mlflow ui --backend-store-uri {uri}"):
        assert line in done.stdout, done.stdout[-3000:]
    assert (tmp_path / "last-check.html").is_file()  # the drift report, beside drift.reference_dir
    assert aliases("fashion-mnist-mrl", uri) == {"champion": "1", "challenger": "1"}

    per_dim = json.loads(latest_local_output(root, "evaluate-op", "per_dim").read_text())
    assert list(per_dim) == ["4", "8", "16"]
    kfp_metrics = json.loads(latest_local_output(root, "evaluate-op", "executor_output.json").read_text())
    logged = kfp_metrics["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["knn_top1_d16"] == pytest.approx(per_dim["16"]["knn_top1"])
    assert (latest_local_output(root, "evaluate-op", "plot").read_bytes()[:4]) == b"\x89PNG"

    run_id = mlflow.MlflowClient(uri).get_model_version("fashion-mnist-mrl", "1").run_id
    assert mlflow.MlflowClient(uri).get_run(run_id).data.metrics["knn_top1_d16"] == pytest.approx(per_dim["16"]["knn_top1"])

    promotion = json.loads(latest_local_output(root, "finish-promotion-op", "promotion").read_text())
    assert promotion["collection"] == "items_v1" and promotion["rows"] == 400
    assert promotion["verify_recall"] >= 0.9  # through Milvus, against the exact top-k merged from the 3 shards
    run_dir = latest_local_output(root, "plan-promotion-op", "executor_output.json").parents[1]
    assert len(list(run_dir.glob("for-loop-*-iteration-*"))) == 3

    # The last step checks the held-out split against the reference promotion just saved.
    summary = json.loads(latest_local_output(root, "dataset-drift-op", "summary").read_text())
    assert summary["drifted"] is False and summary["reference_meta"]["collection"] == "items_v1"
    assert b"Drift in embeddings" in latest_local_output(root, "dataset-drift-op", "report").read_bytes()

    # The monitoring pipeline: a window unlike anything indexed alarms, and the retrain branch runs.
    noise = tmp_path / "window.npy"
    np.save(noise, np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32) + 3.0)
    assert run_drift_local(small_params(raw_dir), str(noise), root, uri, milvus) is True
    assert latest_local_output(root, "retrain-op", "executor_output.json") is not None

    # Last: Milvus Lite's file lock stays with this process once it has opened the file.
    client = mi.connect(milvus)
    assert mi.alias_target(client, "items") == "items_v1"
    client.close()


def test_bad_data_stops_the_pipeline_before_training(raw_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "kfp"
    params = tmp_path / "params.yaml"
    params.write_text(small_params(raw_dir, validation={"min_train_items": 100_000}))
    result = CliRunner().invoke(app, ["pipeline", "run", "--params", str(params), "--tracking-uri", uri,
                                      "--milvus-uri", str(tmp_path / "milvus.db"), "--pipeline-root", str(root)])
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert errors[0].startswith("error: pipeline failed: ") and "validate-op" in errors[0]
    assert errors[0].endswith("registry aliases and the serving index are unchanged")
    assert latest_local_output(root, "train-op", "model") is None
    assert aliases("fashion-mnist-mrl", uri) == {"champion": None, "challenger": None}


@pytest.fixture
def champion(tiny_models, raw_dir, tmp_path):
    """The shared tiny model (seed 0) registered as the champion in a fresh MLflow; returns the tracking URI."""
    uri = tiny_models.register(tmp_path, seeds=[0])["uri"]
    name = parse_params(small_params(raw_dir)).registry.model_name
    mlflow.MlflowClient(uri).set_registered_model_alias(name, "champion", "1")
    return uri


def test_video_pipeline_ingests_validates_segments_and_promotes(raw_dir, champion, tmp_path):
    videos = tmp_path / "videos"
    generate_corpus(videos, 2, mean_video_s=8, fashion_mnist_dir=raw_dir, seed=1, continuous_share=0,
                    scene_s=(2.0, 4.0), progress=False)
    params = tmp_path / "params.yaml"
    params.write_text(small_params(raw_dir, ingest={"source": "video", "input": str(videos)}))
    root, milvus = tmp_path / "kfp", str(tmp_path / "milvus.db")
    # `mrl pipeline run` picks the video pipeline from ingest.source, runs it on kfp.local and searches the result.
    result = CliRunner().invoke(app, ["pipeline", "run", "--params", str(params), "--tracking-uri", champion,
                                      "--milvus-uri", milvus, "--pipeline-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "video index: alias videos -> videos_v1" in result.output and "example search" in result.output
    assert "mrl search --videos --image" in result.output

    for step in ("validate-frames-op", "validate-segments-op"):
        assert json.loads(latest_local_output(root, step, "result").read_text())["success"] is True
    record = json.loads(latest_local_output(root, "promote-segments-op", "promotion").read_text())
    segments = load_segments(latest_local_output(root, "segment-videos-op", "segments"))
    assert record["collection"] == "videos_v1" and record["previous"] is None
    assert record["segments"] == len(segments) > 2 and record["frames"] == len(segments.frame_times)
    assert segments.meta["model_version"] == "1" and sorted(segments.videos) == ["v00000.mp4", "v00001.mp4"]
    client = mi.connect(milvus)
    assert mi.alias_target(client, "videos") == "videos_v1"
    client.close()


def test_video_pipeline_without_a_champion_stops_before_any_step(raw_dir, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(small_params(raw_dir, ingest={"source": "video", "input": str(tmp_path / "videos")}))
    result = CliRunner().invoke(app, ["pipeline", "run", "--params", str(params), "--tracking-uri",
                                      f"sqlite:///{tmp_path / 'mlflow.db'}", "--milvus-uri", str(tmp_path / "m.db"),
                                      "--pipeline-root", str(tmp_path / "kfp")])
    assert result.exit_code == 2 and "run the training pipeline first" in result.output
    assert not (tmp_path / "kfp").exists()
